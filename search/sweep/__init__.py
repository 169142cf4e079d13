"""The sweep's files on its storage and everything written under its lease:

    files.py        SweepDir: sweep.json, segments.json, a segment's Tune directory
    lease.py        one driver per sweep (sweep_lock) and check_writer(), the one guard every
                    writer calls; lease_local.py (a FileLock) and lease_s3.py (a lease object
                    kept by conditional writes, whose generation fences the commit logs)
    study.py        the sweep's Optuna study (a journal file, or a commit log on object storage)
    tune_state.py   Tune's snapshot, checked and repaired before a restore
"""
