"""Adversarial training and robust evaluation of one architecture (torch only, never ray).

    from trainer import fit, Recipe, evaluate, dataset_spec
    from space_defs import wrn
    arch = wrn(16, 4, data=dataset_spec("digits").data)
    result = fit(arch, Recipe(method="trades", epochs=15), "digits", checkpoint_dir="runs/x")
    evaluate(result.best_model_path, attacks=("clean", "pgd20", "cw", "autoattack"))

CLIs: ``python -m trainer fit``, ``python -m trainer evaluate``, ``python -m trainer.bench``.

Names load on first use: a sweep's driver reads ``trainer.recipe`` and ``trainer.datasets``
without paying for torch's import (3 s), which only trials need.
"""

import importlib

_HOMES = {"fit": "loop", "FitResult": "loop", "EpochReport": "report", "Status": "status",
          "Recipe": "recipe", "evaluate": "evaluation", "build_model": "models",
          "DATASETS": "datasets", "dataset_spec": "datasets"}

__all__ = list(_HOMES)


def __getattr__(name: str):
    if name not in _HOMES:
        raise AttributeError(f"module 'trainer' has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_HOMES[name]}", __name__), name)
