"""Run in a process of its own (a FakeCluster's ``env``, or none): where search.cluster would
run a sweep from here, and what it decides about GPUs, trials at once (1 CPU each) and a storage
path. Prints one JSON line.

    python tests/harness/where.py [--storage PATH] [--shared-storage] [--gpus-per-trial G]
"""

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[2]))

from search import cluster  # noqa: E402
from space_defs.cli import UsageError  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--address")
    p.add_argument("--storage", default="./runs")
    p.add_argument("--shared-storage", action="store_true")
    p.add_argument("--gpus-per-trial", type=float)
    args = p.parse_args()
    target = cluster.find_target(args.address)
    if target.embedded:
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    out = {"source": target.source, "address": target.address}
    try:
        place = cluster.connect(target)
        out.update(describe=place.describe(), nodes=place.nodes, hosts=list(place.hosts),
                   gpus=place.gpus, gpus_may_add=place.gpus_may_add, provider=place.provider,
                   multi_host=place.multi_host,
                   gpus_per_trial=cluster.gpus_per_trial(place, args.gpus_per_trial))
        out["trials_at_once"] = cluster.concurrent_trials(place, cpus=1, gpus=out["gpus_per_trial"])
        cluster.check_storage(args.storage, place, shared=args.shared_storage)
        out["storage"] = "accepted"
    except UsageError as e:
        out["error"] = str(e)
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
