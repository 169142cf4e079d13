"""``python -m trainer.fit``: the training command line (the function is ``trainer.fit``)."""

if __name__ == "__main__":
    from trainer.cli import fit_main

    raise SystemExit(fit_main())
