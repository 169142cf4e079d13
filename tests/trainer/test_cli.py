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

from tests.harness.cifar import cifar10_standin  # noqa: F401 - a fixture

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


def test_evaluate_takes_the_seeds_step_as_written_and_its_protocol(tiny_run, capsys):
    import json

    assert main(["evaluate", str(tiny_run), "--n", "10", "--attacks", "clean,pgd2", "--eps", "8/255",
                 "--step-size", "0.8/255", "--protocol", "robustwrn", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["step_size"] == pytest.approx(0.8 / 255) and out["eps"] == pytest.approx(8 / 255)
    assert out["protocol"] == "robustwrn" and set(out["accuracy"]) == {"clean", "pgd2"}


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


CIFAR_FIT = ["fit", "--dataset", "cifar10", "--arch", "d1-1-1 c4-8-16", "--epochs", "1",
             "--method", "standard", "--train-subset", "512", "--batch-size", "32", "--val-size", "64",
             "--val-attack-steps", "1", "--device", "cpu"]


@pytest.fixture(scope="module")
def cifar10_run(cifar10_standin, tmp_path_factory):
    """``python -m trainer fit`` of a tiny net on the CIFAR-10 stand-in, in this process (no
    torch import to pay): (its run directory, its stderr)."""
    import contextlib
    import io

    run, err = tmp_path_factory.mktemp("cifar10-run"), io.StringIO()
    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stderr(err):
        mp.setenv("TRAINER_DATA_MD5", "off")
        assert main([*CIFAR_FIT, "--data-dir", str(cifar10_standin), "--checkpoint-dir", str(run)]) == 0
    return run, err.getvalue()


def test_fit_on_cifar10_shows_seconds_per_epoch_and_the_time_left(cifar10_run):
    _, err = cifar10_run
    assert "epoch/s" not in err and "it/s" not in err
    assert " 1/1 epochs, " in err and " s/epoch, 00:00 left, loss " in err


def test_evaluate_on_cifar10_beats_chance(cifar10_run, cifar10_standin, monkeypatch, capsys):
    monkeypatch.setenv("TRAINER_DATA_MD5", "off")
    run, _ = cifar10_run
    capsys.readouterr()
    assert main(["evaluate", str(run), "--attacks", "clean,pgd2", "--n", "200", "--data-dir",
                 str(cifar10_standin), "--device", "cpu", "--json"]) == 0
    accuracy = json.loads(capsys.readouterr().out)["accuracy"]
    assert accuracy["clean"] > 0.3 and accuracy["pgd2"] <= accuracy["clean"]  # chance: 0.1


def _one_line(capsys) -> str:
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and err.startswith("error: ") and "Traceback" not in err
    return err


def test_a_corrupt_file_stops_fit_evaluate_and_fetch_with_one_line_naming_it(
        cifar10_run, cifar10_standin, tmp_path, monkeypatch, capsys):
    from tests.harness.cifar import as_the_original, with_one_byte_changed

    as_the_original(monkeypatch, cifar10_standin)  # TRAINER_DATA_MD5 unset
    bad = with_one_byte_changed(cifar10_standin, tmp_path / "data")
    says = f"error: cifar10: {bad / 'cifar10/cifar-10-batches-py/data_batch_3'} fails its integrity check"
    checkpoints = tmp_path / "run"
    capsys.readouterr()
    for argv in ([*CIFAR_FIT, "--checkpoint-dir", str(checkpoints)],
                 ["evaluate", str(cifar10_run[0]), "--n", "10", "--device", "cpu"], ["fetch", "cifar10"]):
        assert _exit_code([*argv, "--data-dir", str(bad)]) == 2
        err = _one_line(capsys)
        assert err.startswith(says) and f"`python -m trainer fetch cifar10 --data-dir {bad}`" in err
        assert "TRAINER_DATA_MD5=off" in err
    assert not checkpoints.exists()


def test_a_copy_with_too_few_images_stops_fit_and_fetch_with_one_line(tmp_path, monkeypatch, capsys):
    from tests.harness.cifar import write_cifar10

    monkeypatch.setenv("TRAINER_DATA_MD5", "off")
    write_cifar10(tmp_path / "data", per_batch=1200)
    for argv in ([*CIFAR_FIT, "--checkpoint-dir", str(tmp_path / "run")], ["fetch", "cifar10"]):
        assert _exit_code([*argv, "--data-dir", str(tmp_path / "data")]) == 2
        assert "has 6,000 training and 1,200 test images of 3x32x32; torchvision's cifar10 has " \
               "50,000 and 10,000" in _one_line(capsys)
    assert not (tmp_path / "run").exists()


def test_fetch_of_a_present_copy_checks_it_without_importing_torch(cifar10_standin):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TRAINER_DATA_MD5": "off"}
    code = ("import sys; from trainer.cli import main; main(['fetch', 'cifar10', '--data-dir', sys.argv[1]]); "
            "print(sorted({'torch', 'torchvision'} & set(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code, str(cifar10_standin)], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [
        f"cifar10 is in {cifar10_standin}: 50,000 training and 10,000 test images of 3x32x32 "
        "(md5 not checked: TRAINER_DATA_MD5=off)", "[]"]
