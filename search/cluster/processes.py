"""Processes of this machine, from Linux's /proc: who started what, and stopping exactly those."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path


def processes():
    """(pid, argv) of every process this user can see (Linux /proc; elsewhere none)."""
    try:
        pids = [int(d) for d in os.listdir("/proc") if d.isdigit()]
    except OSError:
        return
    for pid in pids:
        try:
            raw = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        yield pid, [a.decode(errors="replace") for a in raw.split(b"\0") if a]


def flag(argv: list[str], name: str) -> str | None:
    for i, arg in enumerate(argv):
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
        if arg == name and i + 1 < len(argv):
            return argv[i + 1]
    return None


def owner(pid: int) -> int | None:
    try:
        return os.stat(f"/proc/{pid}").st_uid
    except OSError:
        return None


def parent_of(pid: int) -> int | None:
    return (stat_of(pid) or (None, None))[0]


def stat_of(pid: int) -> tuple[int, int] | None:
    """(parent pid, start time in clock ticks since boot) of a live process, or None."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        return int(fields[1]), int(fields[19])
    except (OSError, ValueError, IndexError):
        return None


def descendants() -> dict[int, int]:
    """Every process this one started, and theirs (pid -> start time; Linux /proc)."""
    children: dict[int, list[tuple[int, int]]] = {}
    for pid, _ in processes():
        if (stat := stat_of(pid)) is not None:
            children.setdefault(stat[0], []).append((pid, stat[1]))
    found, todo = {}, [os.getpid()]
    while todo:
        for pid, start in children.get(todo.pop(), ()):
            if pid not in found:
                found[pid] = start
                todo.append(pid)
    return found


def stop_processes(pids: dict[int, int], grace: float = 3.0) -> None:
    """SIGTERM the processes (pid -> start time) still alive, SIGKILL those left after
    ``grace`` seconds: each the same pid with the same start time, never a pid reused since."""
    def alive() -> list[int]:
        return [pid for pid, start in pids.items() if (stat_of(pid) or (0, None))[1] == start]

    deadline = time.monotonic() + grace
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in alive():
            try:
                os.kill(pid, sig)
            except OSError:
                pass
        while alive() and time.monotonic() < deadline:
            time.sleep(0.05)
