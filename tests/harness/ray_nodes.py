"""Real Ray nodes for the system tests, started as `ray start` starts them and stopped by the
processes of their own temp dir: never `ray stop`, which would stop every Ray on the machine."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

RAY = str(Path(sys.executable).parent / "ray")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_head(temp: Path, *, num_cpus: int = 2, num_gpus: int = 0, env=None) -> str:
    """A head node on 127.0.0.1 whose processes all live under ``temp``; its address."""
    port = free_port()
    subprocess.run([RAY, "start", "--head", f"--port={port}", "--node-ip-address=127.0.0.1",
                    f"--num-cpus={num_cpus}", f"--num-gpus={num_gpus}", "--include-dashboard=false",
                    f"--temp-dir={temp}", "--disable-usage-stats"],
                   check=True, capture_output=True, timeout=120, env=env)
    return f"127.0.0.1:{port}"


def pids_under(temp: Path) -> list[int]:
    """Processes whose command line names ``temp`` (every process of a node started with it)."""
    mine, marker = [], re.compile(re.escape(str(temp).encode()) + rb"(/|\0|$)")
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if marker.search((entry / "cmdline").read_bytes()):
                mine.append(int(entry.name))
        except OSError:
            continue
    return [p for p in mine if p != os.getpid()]


def stop(temp: Path, grace: float = 2, timeout: float = 10, *, pids=None) -> None:
    """SIGTERM every process of the nodes under ``temp`` (or that ``pids()`` lists), SIGKILL
    what is left after ``grace`` (Ray 2.60's GCS server, raylet and monitor outlive a SIGTERM by
    more than 10 s when their peers got one too: waiting them out cost every teardown 10 s),
    then wait up to ``timeout``."""
    pids = pids or (lambda: pids_under(temp))
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, timeout)):
        for pid in pids():
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.time() + wait
        while pids() and time.time() < deadline:
            time.sleep(0.2)
        if not pids():
            return
