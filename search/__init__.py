"""The sweep service: Ray Tune + Optuna over the budget space, the trial database, queries.

The only package that knows about Ray and Optuna; submodules import them lazily.
"""
