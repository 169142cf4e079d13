"""Run by test_faults.py in a process of its own: a sweep on a two-worker-node Ray cluster on
this machine, one node removed while both trials run. Prints the first-epoch times it saw."""

import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[2]))

from ray.cluster_utils import Cluster  # noqa: E402

from tests.search.conftest import epochs_so_far, sweep_command, sweep_env, wait_for  # noqa: E402


def main(root: Path) -> None:
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    try:
        workers = [cluster.add_node(num_cpus=1) for _ in range(2)]
        cluster.wait_for_nodes()
        cmd = sweep_command(root, "n", "--trials", "2", "--epochs", "6", "--scheduler", "none",
                            "--address", cluster.address)
        with open(root / "driver.out", "w") as out:
            driver = subprocess.Popen(cmd, stdout=out, stderr=subprocess.DEVNULL, env=sweep_env())

            def both_running():
                rows = epochs_so_far(root, "n")
                if rows is None:
                    return None
                counts = rows.groupby("trial_id")["epoch"].max()
                return rows if len(counts) == 2 and (counts >= 2).all() else None

            rows = wait_for(both_running)
            assert rows is not None, "the trials never both ran"
            time.sleep(2)
            cluster.remove_node(workers[0])
            assert driver.wait(timeout=400) == 0, "the driver failed"
        first = rows.groupby("trial_id")["recorded_at"].min()
        print(json.dumps({t: v.isoformat() for t, v in first.items()}))
    finally:
        cluster.shutdown()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
