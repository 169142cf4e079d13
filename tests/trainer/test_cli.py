import os
import subprocess
import sys
from pathlib import Path

import pytest

from trainer.cli import evaluate_main, fit_main

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("argv, says", [
    (["--arch", "WRN-15-4", "--dataset", "digits"], "6n+4"),
    (["--dataset", "digits", "--epochs", "0"], "epochs"),
    (["--dataset", "mnist"], "invalid choice"),
    (["--dataset", "digits", "--eps", "eight"], "not a number"),
    (["--dataset", "digits", "--method", "fast"], "method"),
    (["--bogus"], "unrecognized"),
])
def test_fit_bad_input_exits_2_with_one_line(argv, says, capsys):
    assert fit_main(argv) == 2
    err = capsys.readouterr().err
    assert says in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_evaluate_bad_input_exits_2(tmp_path, capsys):
    assert evaluate_main([str(tmp_path / "missing.pt")]) == 2
    assert evaluate_main([str(tmp_path), "--attacks", "pgd,cw"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "unknown attack" in err[1]


def test_cli_end_to_end_and_import_stays_light(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    run = [sys.executable, "-m", "trainer.fit", "--arch", "WRN-10-1", "--dataset", "digits", "--method",
           "trades", "--epochs", "1", "--steps", "1", "--val-size", "50", "--checkpoint-dir", str(tmp_path)]
    out = subprocess.run(run, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "finished after 1 epochs" in out.stdout
    ev = subprocess.run([sys.executable, "-m", "trainer.evaluate", str(tmp_path), "--attacks", "clean,fgsm",
                         "--n", "50", "--json"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert ev.returncode == 0 and ev.stderr == "" and '"fgsm"' in ev.stdout
    bad = subprocess.run([sys.executable, "-m", "trainer.fit", "--epochs", "x"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1
    light = subprocess.run([sys.executable, "-c", "import sys, trainer; print(sorted({'ray', 'optuna', 'art'} "
                            "& set(sys.modules)))"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert light.stdout.strip() == "[]"
