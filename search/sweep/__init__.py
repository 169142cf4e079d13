"""A sweep's own files and plans, on whatever storage holds it (search.storage):

    files.py        SweepDir: sweep.json, segments.json, a segment's Tune directory
    study.py        the sweep's Optuna study (python -m search.sweep.study export)
    confirm.py      --confirm: the (config, seed) runs still to train
"""
