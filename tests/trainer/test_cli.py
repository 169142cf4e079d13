import json
import os
import pkgutil
import subprocess
import sys
import types
from pathlib import Path

import pytest

import trainer
from trainer.cli import main

ROOT = Path(__file__).resolve().parents[2]


def _exit_code(argv: list[str]) -> int:
    with pytest.raises(SystemExit) as exited:
        main(argv)
    return exited.value.code


@pytest.mark.parametrize("argv, says", [
    (["--arch", "WRN-15-4", "--dataset", "digits"], "6n+4"),
    (["--dataset", "digits", "--epochs", "0"], "epochs"),
    (["--dataset", "mnist"], "invalid choice"),
    (["--dataset", "digits", "--eps", "eight"], "not a number"),
    (["--dataset", "digits", "--method", "fast"], "method"),
    (["--bogus"], "unrecognized"),
    (["--epochs", "x"], "not an integer"),
    (["--channels-last", "maybe"], "not true or false"),
])
def test_fit_bad_input_exits_2_with_one_line(argv, says, capsys):
    assert _exit_code(["fit", *argv]) == 2
    err = capsys.readouterr().err
    assert says in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert err.startswith("error: ") and "python -m trainer" in err


def test_evaluate_bad_input_exits_2(tmp_path, capsys):
    assert _exit_code(["evaluate", str(tmp_path / "missing.pt")]) == 2
    assert _exit_code(["evaluate", str(tmp_path), "--attacks", "pgd,cw"]) == 2
    assert _exit_code([]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and "no checkpoint" in err[0] and "unknown attack" in err[1]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    from space_defs.arch import WRNConfig
    from trainer import Recipe, dataset_spec, fit

    path = tmp_path_factory.mktemp("tiny")
    tiny = WRNConfig(depths=(1, 1, 1), channels=(4, 8, 8), data=dataset_spec("digits").data)
    fit(tiny, Recipe(method="standard", epochs=1, val_size=10), "digits", checkpoint_dir=path)
    return path


@pytest.mark.parametrize("budget", [["--eps", "8"], ["--step-size=-0.05"], ["--eps=-0.1"], ["--eps", "0"]])
def test_evaluate_refuses_a_budget_outside_0_1(budget, tiny_run, capsys):
    assert _exit_code(["evaluate", str(tiny_run), "--n", "10", *budget]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "must be in (0, 1]" in err and "Traceback" not in err


def test_recipe_flags_are_the_recipe_fields_with_help(capsys):
    with pytest.raises(SystemExit):
        main(["fit", "--help"])
    out = capsys.readouterr().out
    for flag in ("--weight-decay", "--ema-decay", "--channels-last", "--val-attack-steps"):
        assert flag in out
    assert "images per SGD step (default: 128)" in " ".join(out.split())


def test_no_module_shadows_an_exported_name():
    import trainer.cli, trainer.evaluation, trainer.loop  # noqa: E401, F401

    modules = {m.name for m in pkgutil.iter_modules(trainer.__path__)}
    assert not modules & set(trainer.__all__)
    assert callable(trainer.fit) and not isinstance(trainer.fit, types.ModuleType)
    assert callable(trainer.evaluate) and not isinstance(trainer.evaluate, types.ModuleType)


def test_cli_end_to_end_and_import_stays_light(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    run = [sys.executable, "-m", "trainer", "fit", "--arch", "WRN-10-1", "--dataset", "digits", "--method",
           "trades", "--epochs", "1", "--steps", "1", "--val-size", "50", "--eps", "none",
           "--checkpoint-dir", str(tmp_path)]
    out = subprocess.run(run, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "finished after 1 epochs" in out.stdout
    ev = subprocess.run([sys.executable, "-m", "trainer", "evaluate", str(tmp_path), "--attacks", "clean,fgsm",
                         "--n", "50", "--json"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert ev.returncode == 0 and ev.stderr == "" and '"fgsm"' in ev.stdout
    assert json.loads(ev.stdout)["budget"] == "as trained"
    table = subprocess.run([sys.executable, "-m", "trainer", "evaluate", str(tmp_path), "--attacks", "clean",
                            "--n", "20"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert "eps 0.2, step 0.05 (as trained)" in table.stdout and "clean" in table.stdout
    bad = subprocess.run([sys.executable, "-m", "trainer", "fit", "--epochs", "x"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1
    light = subprocess.run([sys.executable, "-c", "import sys, trainer, trainer.report, trainer.status, "
                            "trainer.atomic, trainer.recipe, trainer.datasets; print(sorted({'ray', "
                            "'optuna', 'art', 'torch'} & set(sys.modules)))"],
                           cwd=ROOT, env=env, capture_output=True, text=True)
    assert light.stdout.strip() == "[]"
