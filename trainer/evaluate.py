"""python -m trainer.evaluate CHECKPOINT --attacks pgd20,cw,autoattack (the code: evaluation.py)."""

if __name__ == "__main__":
    from trainer.cli import evaluate_main

    raise SystemExit(evaluate_main())
