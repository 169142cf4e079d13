"""The CIFAR-10 path of a real sweep, on the stand-in of tests/harness/cifar.py (torchvision's
file format, 60,000 learnable images): with TRAINER_DATA_MD5=off in the driver's environment,
which the embedded Ray's trial workers inherit, two trials finish; a copy whose md5 is not
torchvision's, one with a truncated file and one with too few images stop the sweep before Ray
starts, with one line and nothing written."""

from __future__ import annotations

import subprocess
import sys

from tests.harness.cifar import cifar10_standin, with_one_byte_changed, write_cifar10  # noqa: F401
from tests.harness.sweeps import check_database, sweep_env
from tests.system.test_environment import one_error_line

BUDGET = 20_000


def cifar_sweep(storage, data) -> list[str]:
    return [sys.executable, "-m", "search.run", "--dataset", "cifar10", "--data-dir", str(data),
            "--budget", "20K", "--min-blocks", "1", "--max-blocks", "2", "--channel-multiple", "4",
            "--trials", "2", "--epochs", "1", "--method", "standard", "--train-subset", "256",
            "--val-size", "64", "--val-attack-steps", "1", "--scheduler", "none",
            "--max-concurrent", "2", "--cpus-per-trial", "1", "--storage", str(storage),
            "--name", "c10", "--address", "local"]


def test_a_two_trial_cifar10_sweep_on_the_stand_in_finishes_both(cifar10_standin, tmp_path):
    out = subprocess.run(cifar_sweep(tmp_path, cifar10_standin), capture_output=True, text=True,
                         timeout=600, env=sweep_env(TRAINER_DATA_MD5="off"))
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    trials, _ = check_database(tmp_path, "c10", 2, 1, budget=BUDGET)
    assert list(trials["status"]) == ["finished", "finished"]


def test_a_corrupt_or_incomplete_copy_stops_the_sweep_before_any_trial(cifar10_standin, tmp_path):
    storage = tmp_path / "runs"

    def stops(data, **env) -> str:
        out = subprocess.run(cifar_sweep(storage, data), capture_output=True, text=True,
                             timeout=300, env={**sweep_env(), **env})
        line = one_error_line(out)
        assert out.stdout == "" and not (storage / "c10").exists()  # no Ray started, nothing written
        assert line.endswith("Nothing was run or written")
        return line

    # md5 checked: the stand-in is not the original, its first file fails already
    line = stops(cifar10_standin, TRAINER_DATA_MD5="on")
    assert f"{cifar10_standin / 'cifar10/cifar-10-batches-py/data_batch_1'} fails its integrity check" in line
    assert f"python -m trainer fetch cifar10 --data-dir {cifar10_standin}" in line
    assert "TRAINER_DATA_MD5=off" in line

    truncated = with_one_byte_changed(cifar10_standin, tmp_path / "truncated")
    batch = truncated / "cifar10/cifar-10-batches-py/data_batch_3"
    batch.write_bytes(batch.read_bytes()[:1000])
    line = stops(truncated, TRAINER_DATA_MD5="off")
    assert f"{batch} is not a cifar10 batch file" in line

    write_cifar10(tmp_path / "small", per_batch=1200)
    line = stops(tmp_path / "small", TRAINER_DATA_MD5="off")
    assert "has 6,000 training and 1,200 test images of 3x32x32; torchvision's cifar10 has " \
           "50,000 and 10,000 of 3x32x32: the copy is incomplete" in line
