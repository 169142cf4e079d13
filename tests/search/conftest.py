"""One local Ray cluster (a real head node on localhost) shared by the sweep tests."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

RAY = str(Path(sys.executable).parent / "ray")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def ray_address(tmp_path_factory):
    import secrets

    port = _free_port()
    temp = tmp_path_factory.mktemp("ray")
    token = temp / "auth_token"  # token authentication, as Ray enables by default
    token.write_text(secrets.token_hex(32))
    os.environ.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(token))
    subprocess.run([RAY, "start", "--head", f"--port={port}", "--node-ip-address=127.0.0.1",
                    "--num-cpus=2", "--num-gpus=0", "--include-dashboard=false",
                    f"--temp-dir={temp}", "--disable-usage-stats"],
                   check=True, capture_output=True, timeout=120)
    yield f"127.0.0.1:{port}"
    subprocess.run([RAY, "stop", "--force"], capture_output=True, timeout=120)


SWEEP_ARGS = ["--dataset", "digits", "--budget", "30K", "--min-blocks", "1", "--max-blocks", "2",
              "--channel-multiple", "4", "--method", "pgd_at", "--attack-steps", "1",
              "--val-size", "50", "--max-concurrent", "2", "--cpus-per-trial", "1"]


def sweep_command(storage, name, *args) -> list[str]:
    return [sys.executable, "-m", "search.run", "--storage", str(storage), "--name", name,
            *SWEEP_ARGS, *args]


def sweep_env(**extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONUNBUFFERED": "1", "TUNE_GLOBAL_CHECKPOINT_S": "1", **extra}
