"""Run by test_objstore_parts.py in a process of its own: a stand-in for the sweep driver that
takes the sweep's lock, opens its Optuna study and asks/tells trials, printing what it does.

    python objstore_driver.py SWEEP_URI TRIALS [--ttl S] [--hold] [--pause S]

TRIALS new trials (0: forever); --hold: keep the lease afterwards, checking it; --pause: seconds
between trials. Exit 2 with one line ``error: ...`` when refused, 3 when the lease is lost.
"""

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[2]))

import optuna  # noqa: E402

from search.lease import LeaseLost, sweep_lock  # noqa: E402
from search.study import open_study_storage  # noqa: E402
from space_defs.cli import UsageError  # noqa: E402


def say(*words) -> None:
    print(*words, flush=True)


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("uri")
    p.add_argument("trials", type=int)
    p.add_argument("--ttl", type=float, default=3.0)
    p.add_argument("--hold", action="store_true")
    p.add_argument("--pause", type=float, default=0.0)
    args = p.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        with sweep_lock(args.uri, "demo", ttl=args.ttl,
                        on_lost=lambda message: say("on_lost:", message)) as lease:
            say("held")
            study = optuna.create_study(storage=open_study_storage(args.uri), study_name="demo",
                                        load_if_exists=True,
                                        sampler=optuna.samplers.TPESampler(n_startup_trials=3))
            say("seen", len(study.trials))
            done = 0
            while args.trials == 0 or done < args.trials:
                trial = study.ask()
                x = trial.suggest_float("x", -1, 1)
                study.tell(trial, x * x)
                done += 1
                say("told", trial.number, repr(x))
                time.sleep(args.pause)
            while args.hold:
                lease.check()
                time.sleep(0.05)
    except LeaseLost as e:
        say("lost:", e)
        return 3
    except UsageError as e:
        say(f"error: {e}")
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
