"""Run by test_faults.py in a process of its own: a sweep of two 6-epoch trials on a Ray cluster
of three one-CPU worker nodes on this machine (ray.cluster_utils.Cluster). Each trial fails
once by its own error and loses its node once, in the two orders: trial A raises after epoch 2
and is held after epoch 4; trial B is held after epoch 3 and raises after epoch 5. Once both
are held (their epochs recorded, epochs still to go), the nodes under both are removed, then
both are released and retried on the third node. Prints which trial was which and the epochs
recorded before the loss."""

import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[2]))

from ray.cluster_utils import Cluster  # noqa: E402

from tests.harness.faults import held, release, with_faults  # noqa: E402
from tests.harness.sweeps import epochs_so_far, sweep_command, sweep_env, wait_for  # noqa: E402

FAULTS = [
    {"at": "epoch", "epoch": 2, "action": "raise", "sticky": False, "group": "A"},
    {"at": "epoch", "epoch": 4, "action": "hold", "sticky": False, "group": "A"},
    {"at": "epoch", "epoch": 3, "action": "hold", "sticky": False, "group": "B"},
    {"at": "epoch", "epoch": 5, "action": "raise", "sticky": False, "group": "B"},
]


def main(root: Path) -> None:
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    try:
        workers = [cluster.add_node(num_cpus=1) for _ in range(3)]
        cluster.wait_for_nodes()
        cmd = with_faults(sweep_command(root, "n", "--trials", "2", "--epochs", "6", "--scheduler",
                                        "none", "--address", cluster.address), root, *FAULTS)
        claims = str(root / "claims")
        with open(root / "driver.out", "w") as out:
            driver = subprocess.Popen(cmd, stdout=out, stderr=subprocess.DEVNULL, env=sweep_env())

            def both_held_and_recorded():
                now = held(claims)
                rows = epochs_so_far(root, "n")
                if len(now) < 2 or rows is None:
                    return None
                done = rows.groupby("trial_id")["epoch"].max()
                return all(done.get(h["trial_id"], 0) >= h["epoch"] for h in now) and (now, rows)

            seen = wait_for(both_held_and_recorded)
            assert seen, "the trials never both reached their hold"
            now, rows = seen
            for h in now:
                (node,) = [w for w in workers if w.node_id == h["node_id"]]
                cluster.remove_node(node)
            release(claims)
            assert driver.wait(timeout=400) == 0, "the driver failed"
        groups = {(root / "claims" / f"group-{g}.claim").read_text(): g for g in "AB"}
        print(json.dumps({"groups": groups,
                          "before": {f"{r.trial_id} {r.epoch}": r.recorded_at.isoformat()
                                     for r in rows.itertuples()}}))
    finally:
        cluster.shutdown()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
