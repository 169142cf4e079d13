"""Run by test_objstore_parts.py in a process of its own: a stand-in for the sweep driver that
takes the sweep's lock, opens its Optuna study and asks/tells trials, writing a trial row to the
sweep's trial database for each (as the recorder does), printing what it does.

    python objstore_driver.py SWEEP_URI TRIALS [--ttl S] [--hold] [--pause S] [--clock-stops]

SWEEP_URI is s3://BUCKET/runs/NAME?options; TRIALS new trials (0: forever); --hold: keep the
lease afterwards, checking it; --pause: seconds between trials; --clock-stops: after taking the
lease, this driver's clock stands still and its renewals hang (a machine suspended on a clock
that does not count the suspend: it cannot tell that its lease lapsed, so only the store can
stop its writes). Exit 2 with one line ``error: ...`` when refused, 3 when the lease is lost.
"""

import argparse
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[2]))

import optuna  # noqa: E402

from search.storage import s3_lease as lease_module  # noqa: E402
from search.storage.uri import is_local  # noqa: E402
from search.storage.commits import Fenced  # noqa: E402
from search.storage.lease import sweep_lock  # noqa: E402
from search.tune.writer import open_store  # noqa: E402
from search.sweep.study import open_study_storage  # noqa: E402
from space_defs.cli import UsageError  # noqa: E402
from tests.search.db.test_store import trial as trial_row  # noqa: E402


def say(*words) -> None:
    print(*words, flush=True)


def stop_the_clock() -> None:
    lease_module._clock = lambda: 0.0
    hang = threading.Event()
    lease_module.S3Lease._renew = lambda self: hang.wait()


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("uri")
    p.add_argument("trials", type=int)
    p.add_argument("--ttl", type=float, default=3.0)
    p.add_argument("--hold", action="store_true")
    p.add_argument("--pause", type=float, default=0.0)
    p.add_argument("--clock-stops", action="store_true")
    args = p.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    root, _, name = args.uri.partition("?")[0].rpartition("/")
    storage = root + ("?" + args.uri.partition("?")[2] if "?" in args.uri else "")
    try:
        with sweep_lock(args.uri, "demo", ttl=args.ttl,
                        on_lost=lambda message: say("on_lost:", message)) as lease:
            if args.clock_stops:
                stop_the_clock()
            say("held", lease.generation)
            study = optuna.create_study(storage=open_study_storage(args.uri), study_name="demo",
                                        load_if_exists=True,
                                        sampler=optuna.samplers.TPESampler(n_startup_trials=3))
            store = None if is_local(args.uri) else open_store(storage, name)
            say("seen", len(study.trials))
            done = 0
            while args.trials == 0 or done < args.trials:
                trial = study.ask()
                x = trial.suggest_float("x", -1, 1)
                study.tell(trial, x * x)
                say("told", trial.number, repr(x))
                if store is not None:
                    store.write(trials=[trial_row(sweep=name, trial_id=f"t{trial.number}",
                                                  best_val_robust_acc=x * x)])
                    store.flush()
                    say("stored", trial.number)
                done += 1
                time.sleep(args.pause)
            while args.hold:
                lease.check()
                time.sleep(0.05)
    except Fenced as e:
        say("lost:", e)
        return 3
    except UsageError as e:
        say(f"error: {e}")
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
