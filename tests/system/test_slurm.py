"""deploy/slurm/sweep.sbatch on a real two-node SLURM cluster on this machine
(tests/harness/slurm.py): a sweep across both nodes ends exact; scancel mid-sweep stops it
cleanly and resubmitting the same job resumes it to exact; a GRES GPU that CUDA cannot use stops
the job with exit 2 and one line. Every process is stopped by the pids of the cluster's temp dir."""

from __future__ import annotations

import sys
from pathlib import Path

from tests.harness import slurm as slurm_harness
from tests.harness.sweeps import SWEEP_ARGS, check_database, epochs_so_far, sweep_env, wait_for

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "deploy" / "slurm" / "sweep.sbatch"
BIN = Path(sys.executable).parent
slurm = slurm_harness.slurm  # the cluster: a module-scope fixture


def submit(slurm, tmp_path, name, *args, sbatch=()):
    """sbatch the script with this venv's python and ray; (job id, its output file)."""
    out = tmp_path / f"{name}-%j.out"
    env = sweep_env(PYTHON=str(BIN / "python"), RAY=str(BIN / "ray"),
                    SLURM_CONF=str(slurm.conf), RAY_JOB_TMP=str(slurm.root / f"r{name}"))
    job = slurm.sbatch("--nodes=2", "--cpus-per-task=1", f"--output={out}", f"--chdir={REPO}",
                       "--gres=gpu:0", *sbatch, SCRIPT, "--storage", tmp_path / "runs",
                       "--shared-storage", "--name", name, *SWEEP_ARGS, *args, env=env)
    return job, Path(str(out).replace("%j", job))


def resubmitted_ends_exact(slurm, tmp_path, name, args) -> None:
    """The same job submitted again: it completes, and the sweep holds exactly its 3 trials of
    4 epochs, every one finished."""
    job, out = submit(slurm, tmp_path, name, *args)
    info = slurm.wait(job)
    text = out.read_text()
    assert info["JobState"] == "COMPLETED" and info["ExitCode"] == "0:0", text[-3000:]
    trials, _ = check_database(tmp_path / "runs", name, 3, 4)
    assert set(trials["status"]) == {"finished"}, trials


def test_a_sweep_runs_across_both_nodes_and_ends_exact(slurm, tmp_path):
    job, out = submit(slurm, tmp_path, "both", "--trials", "2", "--epochs", "2",
                      "--scheduler", "none")
    info = slurm.wait(job)
    text = out.read_text()
    assert info["JobState"] == "COMPLETED" and info["ExitCode"] == "0:0", text[-3000:]
    assert "nodes: vm vm2" in text and "Traceback" not in text
    # 1 CPU per node, 1 per trial: two trials at once only with both nodes in the Ray cluster
    assert "2 nodes" in text and "trials at once: 2" in text, text[-3000:]
    trials, _ = check_database(tmp_path / "runs", "both", 2, 2)
    assert set(trials["status"]) == {"finished"}


def test_scancel_batch_int_mid_sweep_stops_cleanly_and_resubmitting_resumes_to_exact(slurm, tmp_path):
    args = ("--trials", "3", "--epochs", "4", "--scheduler", "none")
    job, out = submit(slurm, tmp_path, "cut", *args)
    assert wait_for(lambda: (rows := epochs_so_far(tmp_path / "runs", "cut")) is not None
                    and len(rows) >= 1, timeout=300)
    # as docs/SLURM.md says: SIGINT to the batch shell alone, which forwards it to the driver
    # (a plain scancel signals the Ray nodes at the same moment)
    slurm.scancel(job, "--batch", "--signal=INT")
    info = slurm.wait(job)
    text = out.read_text()
    assert info["ExitCode"] == "130:0", (info, text[-3000:])  # the driver's Ctrl-C exit
    assert "its state saved; run the same command again to resume it" in text
    assert "Traceback" not in text, text[-3000:]
    resubmitted_ends_exact(slurm, tmp_path, "cut", args)


def test_a_gres_gpu_cuda_cannot_use_stops_the_job_with_exit_2_and_one_line(slurm, tmp_path):
    job, out = submit(slurm, tmp_path, "gpu", "--trials", "2", "--epochs", "2",
                      "--scheduler", "none", "--gpus-per-trial", "1", sbatch=("--gres=gpu:1",))
    info = slurm.wait(job)
    text = out.read_text()
    assert info["ExitCode"] == "2:0", (info, text[-3000:])
    errors = [line for line in text.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "that CUDA cannot use" in errors[0], text[-3000:]
    assert "--fake-gpus" in errors[0] and "Traceback" not in text


def test_a_plain_scancel_mid_sweep_then_resubmitting_ends_exact_and_none_failed(slurm, tmp_path):
    """scancel (SIGTERM to every step, the Ray nodes with the driver) is not a clean stop
    (docs/SLURM.md), but nothing is lost: the resubmitted job resumes to exact."""
    args = ("--trials", "3", "--epochs", "4", "--scheduler", "none")
    job, _ = submit(slurm, tmp_path, "term", *args)
    assert wait_for(lambda: (rows := epochs_so_far(tmp_path / "runs", "term")) is not None
                    and len(rows) >= 1, timeout=300)
    slurm.scancel(job)
    slurm.wait(job)
    resubmitted_ends_exact(slurm, tmp_path, "term", args)
