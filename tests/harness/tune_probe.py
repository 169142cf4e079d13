"""Run by test_fake_cluster.py in a process of its own, on a FakeCluster's head (its ``env``):
attaches by search.cluster's rule with no address, runs two tiny Tune trials that ask for a GPU
with search.cluster's retry policy, and prints one JSON line of what happened.

Trial "lose" reports epochs slowly: the test kills its node after its second epoch; Tune must
retry it from its checkpoint and classify the failure as a node loss. Trial "raise" raises its
own error from its second epoch on: retried OWN_ERROR_RETRIES times, then it reports itself
failed. Both record the device search.cluster.trial_device() gives them.
"""

import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[2]))

from search import cluster  # noqa: E402


def trainable(config):
    import ray
    from ray import tune

    device = cluster.trial_device()
    own = cluster.OwnErrors.of_this_trial()
    start = 0
    restored = tune.get_checkpoint()
    if restored is not None:
        start = json.loads(Path(restored.to_directory(), "state.json").read_text())["epoch"]
    for epoch in range(start + 1, 5):
        time.sleep(config["seconds"])
        state = Path(tempfile.mkdtemp())
        (state / "state.json").write_text(json.dumps({"epoch": epoch}))
        result = {"epoch": epoch, "resumed_from": start, "device": device.name, "note": device.note,
                  "gpus": device.gpus, "node": ray.get_runtime_context().get_node_id()}
        tune.report(result, checkpoint=tune.Checkpoint.from_directory(str(state)))
        if config["mode"] == "raise" and epoch >= 2:
            try:
                raise ValueError(f"own error at epoch {epoch}")
            except ValueError as e:
                if own.record(e):
                    raise
                tune.report({**result, "failed": str(e), "own_errors": len(own.errors())})
                return


def main(storage: str) -> None:
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # the old engine honours verbose=0
    from ray import tune

    target = cluster.find_target(None)
    place = cluster.connect(target)
    gpus = cluster.gpus_per_trial(place, None)
    seen = []

    class Errors(tune.Callback):
        def on_trial_recover(self, iteration, trials, trial, **info):
            error = cluster.trial_error(trial)
            seen.append({"trial": trial.config["mode"], "type": type(error).__name__,
                         "node_loss": cluster.is_node_loss(error)})

        def on_trial_result(self, iteration, trials, trial, result, **info):
            print(json.dumps({"progress": trial.config["mode"], "epoch": result["epoch"],
                              "node": result.get("node")}), flush=True)

    tuner = tune.Tuner(
        tune.with_resources(trainable, {"cpu": 1, "gpu": gpus}),
        param_space={"mode": tune.grid_search(["lose", "raise"]),
                     "seconds": 2.0},
        run_config=tune.RunConfig(storage_path=storage, name="probe", verbose=0,
                                  failure_config=cluster.failure_config(), callbacks=[Errors()]))
    grid = tuner.fit()
    trials = {}
    for r in grid:
        history = r.metrics_dataframe
        trials[r.config["mode"]] = {
            "last": {k: r.metrics.get(k) for k in ("epoch", "device", "note", "gpus", "failed",
                                                   "own_errors", "resumed_from")},
            "resumed_from": sorted(set(history["resumed_from"])) if history is not None else [],
            "error": type(r.error).__name__ if r.error else None}
    print(json.dumps({"target": target.source, "place": place.describe(), "gpus_per_trial": gpus,
                      "recoveries": seen, "trials": trials}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
