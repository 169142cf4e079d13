"""What the embedded Ray exposes: its servers on localhost only, no dashboard."""

from __future__ import annotations

import ast
import os
import subprocess
import sys


PROBE = """
import os, socket, struct
from search.driver import run_sweep
from search.spec import SweepSpec
from trainer.recipe import Recipe
import search.driver as driver


def descendants(root):
    parents = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            parents[int(pid)] = int(open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[1])
        except OSError:
            pass
    found, todo = set(), [root]
    while todo:
        pid = todo.pop()
        found.add(pid)
        todo += [c for c, p in parents.items() if p == pid and c not in found]
    return found


def listening_ips(pids):
    inodes = set()
    for pid in pids:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if link.startswith("socket:["):
                inodes.add(link[8:-1])
    ips = set()
    for table, family in (("/proc/net/tcp", socket.AF_INET), ("/proc/net/tcp6", socket.AF_INET6)):
        for line in open(table).read().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                raw = bytes.fromhex(fields[1].split(":")[0])
                words = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
                ips.add(socket.inet_ntop(family, words))
    return ips


def probe(*args, **kwargs):
    import ray

    ips = listening_ips(descendants(os.getpid()))
    print("LISTEN", sorted(ips), ray._private.worker.global_worker.node.address_info.get("webui_url"))


driver.run_segments = probe
spec = SweepSpec(name="sec", budget=30_000, dataset="digits", min_blocks=1, max_blocks=2,
                 channel_multiple=4, recipe=Recipe(method="pgd_at", epochs=1), trials=1)
run_sweep(spec, storage=os.environ["PROBE_STORAGE"])
"""


def test_the_embedded_ray_listens_on_localhost_only_and_has_no_dashboard(tmp_path):
    """A real sweep driver on the embedded Ray: every listening socket of the driver's Ray
    processes is on 127.0.0.1, and no dashboard runs."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS" and not k.startswith("RAY_AUTH")}
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=180,
                         env={**env, "PROBE_STORAGE": str(tmp_path)})
    assert out.returncode == 0, out.stderr[-2000:]
    line = next(line for line in out.stdout.splitlines() if line.startswith("LISTEN"))
    ips = ast.literal_eval(line[len("LISTEN "):line.rindex("]") + 1])
    assert len(ips) >= 1 and set(ips) <= {"127.0.0.1", "::ffff:127.0.0.1"}, line
    assert line.split("]")[-1].strip() in ("None", ""), line  # no dashboard URL
