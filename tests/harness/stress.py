"""Run chosen tests many times with a CPU load beside them; print pass counts and durations.

    python tests/harness/stress.py -n 20 tests/system/test_faults.py::test_losing_a_worker_node_mid_trial
    python tests/harness/stress.py -n 20 -m system          # every system test, each 20 times

Each run of each test is a pytest process of its own (fixtures, Ray nodes and servers start
afresh, as in CI), in round-robin order so that a slow spell of the machine does not land on
one test only. ``--load K`` busy processes (default: one per core) spin beside them the whole
time, at ``--nice`` 15: the niceness Ray gives its workers, so a busy loop competes with a trial
as an equal (at nice 0 it takes about 96% of a core from a nice-15 Ray worker, and the tests
measure starvation rather than races). A failed run's output is kept in ``--logs`` (default
stress-logs/). Exit code 1 when any run failed. Ctrl-C ends the running test as pytest ends one
(its teardown stops what it started) before the load goes. ``--minutes M`` starts no run after
M minutes; either way the table counts the runs that ended.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).parents[2]
SPIN = "while True:\n    pass\n"


@contextmanager
def cpu_load(processes: int, nice: int):
    """``processes`` busy loops (a core each) at niceness ``nice``, stopped on the way out."""
    spinners = [subprocess.Popen([sys.executable, "-c", SPIN], preexec_fn=lambda: os.nice(nice))
                for _ in range(processes)]
    try:
        yield
    finally:
        for p in spinners:
            p.kill()
            p.wait()


def collect(selectors: list[str], marker: str | None) -> list[str]:
    """The test ids that ``pytest --collect-only`` finds for the selectors and marker."""
    cmd = [sys.executable, "-m", "pytest", "--collect-only", "-p", "no:cacheprovider",
           *(["-m", marker] if marker else []), *selectors]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False)
    ids = [line for line in out.stdout.splitlines() if "::" in line and not line.startswith(" ")]
    if not ids:
        sys.exit(f"error: no test matches {selectors or ''} {marker or ''}:\n{out.stdout[-2000:]}")
    return ids


def run_once(test: str, logs: Path, run: int, timeout: float) -> tuple[bool, float]:
    t0 = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider",
                             test], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    try:
        text, _ = proc.communicate(timeout=timeout)
        passed = proc.returncode == 0
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGINT)  # pytest's teardown stops the test's processes
        text, _ = proc.communicate()
        passed, text = False, f"timed out after {timeout:.0f} s\n{text}"
    except KeyboardInterrupt:
        proc.send_signal(signal.SIGINT)
        proc.communicate()
        raise
    seconds = time.monotonic() - t0
    if not passed:
        logs.mkdir(parents=True, exist_ok=True)
        name = test.replace("/", "_").replace("::", "--")
        (logs / f"{name}.run{run}.log").write_text(text)
    return passed, seconds


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python tests/harness/stress.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("tests", nargs="*", help="pytest selectors (files, node ids)")
    p.add_argument("-n", "--runs", type=int, default=20, help="runs of each test (20)")
    p.add_argument("-m", dest="marker", help="a pytest marker expression, e.g. system")
    p.add_argument("--load", type=int, default=os.cpu_count() or 1,
                   help="busy processes beside the tests (default: one per core)")
    p.add_argument("--nice", type=int, default=15,
                   help="the busy processes' niceness (15, as Ray's workers)")
    p.add_argument("--timeout", type=float, default=900, help="seconds per run (900)")
    p.add_argument("--logs", type=Path, default=ROOT / "stress-logs", help="failed runs' output")
    p.add_argument("--minutes", type=float, default=float("inf"),
                   help="start no run after this many minutes (default: no limit)")
    args = p.parse_args(argv)
    tests = collect(args.tests, args.marker)
    seconds: dict[str, list[float]] = {t: [] for t in tests}
    passes = dict.fromkeys(tests, 0)
    print(f"{len(tests)} tests x {args.runs} runs, {args.load} busy processes (nice {args.nice}) "
          "beside them", flush=True)
    deadline = time.monotonic() + args.minutes * 60
    try:
        with cpu_load(args.load, args.nice):
            for run in range(1, args.runs + 1):
                for test in tests:
                    if time.monotonic() > deadline:
                        raise TimeoutError
                    ok, s = run_once(test, args.logs, run, args.timeout)
                    passes[test] += ok
                    seconds[test].append(s)
                    print(f"run {run}: {'pass' if ok else 'FAIL'} {s:6.1f} s  {test}", flush=True)
    except (KeyboardInterrupt, TimeoutError) as stop:
        why = "interrupted" if isinstance(stop, KeyboardInterrupt) else f"{args.minutes:g} min up"
        print(f"\n{why}: the table counts the runs that ended", flush=True)
    print("\n| test | passed | median s | max s |\n|---|---|---|---|")
    for test in tests:
        if seconds[test]:
            print(f"| {test} | {passes[test]}/{len(seconds[test])} "
                  f"| {statistics.median(seconds[test]):.1f} | {max(seconds[test]):.1f} |")
    return 0 if all(passes[t] == len(seconds[t]) for t in tests) else 1

if __name__ == "__main__":
    sys.exit(main())
