"""Bad input, table-driven: exit code 2, one line saying what is wrong and how to fix it, no
traceback, and the storage exactly as it was."""

from __future__ import annotations

import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.harness.sweeps import run, snapshot, sweep_command
from .db.test_query import make_sweep

RUN_CASES = [
    (["--budget="], "invalid budget"),
    (["--budget", "abc"], "invalid budget"),
    (["--budget=-5M"], "invalid budget"),
    (["--budget", "0"], "must be positive"),
    (["--budget", "36MB"], "invalid budget"),
    (["--budget", "1e400"], "invalid budget"),
    (["--budget", "nan"], "invalid budget"),
    (["--budget", "1K"], "budget 1.00K"),  # no config of the space can be that small
    (["--budget", "50G"], "too large"),
    (["--dataset", "mnist"], "unknown dataset"),
    (["--space", "hexagonal"], "unknown space"),
    (["--method", "fgsm_at"], "method must be one of"),
    (["--objectives", "val_robust_acc,speed"], "unknown objective"),
    (["--objectives", "val_robust_acc,-speed"], "unknown objective"),
    (["--objectives", "val_robust_acc,-"], "empty objective"),
    (["--objectives", "macs,-macs"], "give each once"),
    (["--epochs", "0"], "epochs must be a positive integer"),
    (["--epochs=-3"], "epochs must be a positive integer"),
    (["--epochs", "ten"], "not an integer"),
    (["--trials", "0"], "trials must be at least 1"),
    (["--max-concurrent", "0"], "max concurrent must be at least 1"),
    (["--cpus-per-trial", "0.001"], "at least 0.01"),
    (["--gpus-per-trial=-1"], "GPUs per trial"),
    (["--max-macs", "1K"], "max MACs"),
    (["--final-eval", "9", "--trials", "3"], "final eval K"),
    (["--final-attacks", "pgd20,bogus"], "unknown attack"),
    (["--final-protocol", "madry"], "unknown --final-protocol 'madry'; choose one of default, robustwrn"),
    (["--select-on", "train"], "select_on must be one of val, test"),
    (["--train-subset", "0"], "train_subset must be a positive integer"),
    (["--eps", "0.8/0"], "not a number"),
    (["--tolerance", "2"], "tolerance"),
    (["--scheduler", "hyperband"], "unknown scheduler"),
    (["--name", "../evil"], "invalid sweep name"),
    (["--name", "a/b"], "invalid sweep name"),
    (["--storage", "foo://bucket/runs"], "cannot use --storage"),
    (["--address", "127.0.0.1:1"], "cannot reach the Ray cluster"),
]


@pytest.fixture
def storage(tmp_path):
    root = tmp_path / "runs"
    (root / "other-sweep").mkdir(parents=True)
    (root / "other-sweep" / "sweep.json").write_text("{}")
    return root


def refused(out, message: str) -> None:
    assert out.returncode == 2, out.stderr
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0] and lines[0].startswith("error:"), out.stderr
    assert "Traceback" not in out.stderr and out.stdout == ""


def bad_command(storage, args: list[str]) -> list[str]:
    cmd = sweep_command(storage, "bad", *args)
    if "--storage" in args:  # the case's own storage replaces the fixture's
        cmd = [c for i, c in enumerate(cmd) if not (c == "--storage" or cmd[i - 1] == "--storage")
               or i > cmd.index("--name")]
    return cmd


@pytest.mark.parametrize("args, message", RUN_CASES, ids=[" ".join(a) for a, _ in RUN_CASES])
def test_search_run_refuses(storage, args, message, capsys):
    """In this process (search.run.main, as ``python -m search.run`` calls it); the process
    itself: test_a_refusal_is_the_process_exit_code."""
    from search import run as search_run

    before = snapshot(storage)
    try:
        code = search_run.main(bad_command(storage, args)[3:])
    except SystemExit as e:  # argparse's own refusals
        code = e.code
    out = capsys.readouterr()
    refused(subprocess.CompletedProcess(args, code, out.out, out.err), message)
    assert snapshot(storage) == before


def test_a_refusal_is_the_process_exit_code(storage):
    before = snapshot(storage)
    refused(run(bad_command(storage, ["--budget", "abc"]), timeout=120), "invalid budget")
    refused(run(bad_command(storage, ["--epochs", "ten"]), timeout=120), "not an integer")
    assert snapshot(storage) == before


def query(storage, *args):
    return run([sys.executable, "-m", "search.query", *args, "--storage", str(storage)], timeout=120)


def test_query_of_a_sweep_that_does_not_exist(storage):
    make_sweep(storage, "real")  # a real database beside the missing sweep
    before = snapshot(storage)
    refused(query(storage, "best", "--sweep", "nope"), "nope")
    assert snapshot(storage) == before


def test_query_refuses_a_parquet_file_that_is_not_ours(storage):
    foreign = storage / "other-sweep" / "db" / "trials"
    foreign.mkdir(parents=True)
    pq.write_table(pa.table({"x": [1, 2]}), foreign / f"{'9' * 20}-{'0' * 20}-L0-{'a' * 12}.parquet")
    before = snapshot(storage)
    refused(query(storage, "top"), "other-sweep")
    assert snapshot(storage) == before


def test_the_driver_checks_its_input_without_importing_torch():
    """The driver never trains: checking a spec (attack names included) and building the Tuner
    must not pay for torch's import (seconds on 2 cores, before the first trial can start)."""
    code = ("import sys; from search.spec import SweepSpec; import search.run, search.driver, "
            "search.tune.tuner, search.tune.recorder, search.trial.trainable, search.final_eval; "
            "SweepSpec(name='s', budget=60_000, dataset='digits', max_blocks=2, channel_multiple=4, "
            "final_attacks=('pgd20', 'cw', 'aa')).check(); "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
