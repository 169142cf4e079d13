"""search.run's command line is derived from SweepSpec and Recipe, and the segment plan that
resume and extension rest on (no Ray needed for either)."""

from __future__ import annotations

import dataclasses
import json

import pytest

from search.driver import plan_segments
from search.run import build_spec, parser
from search.spec import SweepSpec, demo
from search.sweep.files import Segment
from trainer.datasets import dataset_spec
from trainer.recipe import Recipe


def spec_of(*argv: str) -> SweepSpec:
    return build_spec(parser().parse_args(list(argv)))


def test_every_spec_and_recipe_field_is_a_flag_with_its_default_in_the_help():
    text = parser().format_help()
    for cls in (SweepSpec, Recipe):
        for f in dataclasses.fields(cls):
            if f.name != "recipe":
                assert f"--{f.name.replace('_', '-')}" in text, f.name
    assert "(default: 16)" in text and "(default: trades)" in text


def test_flags_left_out_keep_the_dataclass_defaults():
    spec = spec_of("--budget", "36M")
    assert spec == SweepSpec(name="cifar10-36M-trades", budget=36_000_000)
    assert spec.recipe == Recipe().for_dataset(dataset_spec("cifar10"))


def test_flags_reach_the_spec_and_its_recipe():
    spec = spec_of("--budget", "1.5M", "--dataset", "SVHN", "--method", "mart", "--epochs", "7",
                   "--steps", "3", "--eps", "4/255", "--objectives", "val_robust_acc,macs",
                   "--scheduler", "none", "--seed", "5", "--max-macs", "2G", "--grace-period", "2")
    assert (spec.name, spec.budget, spec.dataset) == ("svhn-1.50M-mart", 1_500_000, "svhn")
    assert spec.objectives == ("val_robust_acc", "macs") and spec.max_macs == 2_000_000_000
    assert (spec.recipe.method, spec.recipe.epochs, spec.recipe.steps) == ("mart", 7, 3)
    assert spec.recipe.eps == pytest.approx(4 / 255)
    assert spec.seed == spec.recipe.seed == 5  # --seed seeds the sampler and training


def test_objectives_take_one_syntax_and_are_stored_in_one_spelling():
    """'-name' minimises, '+name' maximises, a bare name takes its natural direction (as in
    search.query); the spec stores the bare name in the natural direction, so a sweep.json
    saved with "macs" (when '-macs' was refused) means the same as before and as '-macs'."""
    bare = spec_of("--budget", "1.5M", "--scheduler", "none", "--objectives", "val_robust_acc,macs")
    signed = spec_of("--budget", "1.5M", "--scheduler", "none", "--objectives", "+val_robust_acc,-macs")
    assert bare == signed and bare.objectives == ("val_robust_acc", "macs")
    assert (bare.metrics, bare.modes) == (("val_robust_acc", "macs"), ("max", "min"))
    assert "objectives: val_robust_acc (max), macs (min)" in bare.describe().splitlines()
    saved = json.loads(bare.to_json())
    assert saved["objectives"] == ["val_robust_acc", "macs"]
    assert SweepSpec.from_json(json.dumps(saved)).modes == ("max", "min")
    assert signed.changes_from(SweepSpec.from_json(bare.to_json())) == []
    against = spec_of("--budget", "1.5M", "--scheduler", "none", "--objectives=-val_robust_acc,+macs")
    assert against.objectives == ("-val_robust_acc", "+macs") and against.modes == ("min", "max")
    assert SweepSpec.from_json(against.to_json()) == against


def test_a_spec_crosses_processes_in_its_saved_form():
    """Pickled (to trials, to Tune's snapshot) a SweepSpec travels as its JSON, the form a saved
    sweep.json has, and comes back equal; its GPUs per trial stay None until the driver
    resolves them."""
    import pickle

    import cloudpickle

    spec = spec_of("--demo", "--epochs", "3", "--objectives", "val_robust_acc,-macs", "--scheduler", "none")
    assert spec.gpus_per_trial is None
    assert pickle.loads(pickle.dumps(spec)) == spec == cloudpickle.loads(cloudpickle.dumps(spec))
    assert spec.to_json().encode() in pickle.dumps(spec)
    resolved = dataclasses.replace(spec, gpus_per_trial=0.5)
    assert pickle.loads(pickle.dumps(resolved)).gpus_per_trial == 0.5


def test_the_demo_is_a_spec_factory_and_flags_override_it():
    assert spec_of("--demo") == demo()
    spec = spec_of("--demo", "--epochs", "1", "--trials", "3", "--name", "mine")
    assert (spec.recipe.epochs, spec.trials, spec.name, spec.dataset) == (1, 3, "mine", "digits")
    assert spec.recipe.method == demo().recipe.method


def test_a_missing_budget_is_a_usage_error():
    with pytest.raises(ValueError, match="--budget is required"):
        spec_of("--epochs", "3")


def test_bad_flags_exit_2_with_one_line(capsys):
    with pytest.raises(SystemExit) as e:
        parser().parse_args(["--budget", "abc"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1 and err.startswith("error: ")


@pytest.mark.parametrize("segments, recorded, trials, expected", [
    ([], 0, 4, [Segment("tune-1", 4)]),                                      # a new sweep
    ([Segment("tune-1", 4)], 4, 4, [Segment("tune-1", 4, True)]),           # finished
    ([Segment("tune-1", 4)], 3, 4,                                           # one lost: replaced
     [Segment("tune-1", 4, True), Segment("tune-2", 1)]),
    ([Segment("tune-1", 4, True)], 4, 6,                                     # extended
     [Segment("tune-1", 4, True), Segment("tune-2", 2)]),
    ([Segment("tune-1", 4, True), Segment("tune-2", 2)], 6, 6,
     [Segment("tune-1", 4, True), Segment("tune-2", 2, True)]),
])
def test_plan_segments(segments, recorded, trials, expected):
    assert plan_segments(segments, recorded, trials) == expected


def test_trials_at_once_default_to_the_cluster_and_never_exceed_the_trials_left():
    from search.tune.tuner import max_concurrent_in

    assert spec_of("--budget", "36M").max_concurrent is None  # resolved by the driver
    assert spec_of("--budget", "36M", "--max-concurrent", "3").max_concurrent == 3
    spec = dataclasses.replace(spec_of("--budget", "36M"), max_concurrent=8)  # 8 GPUs, 1 each
    assert max_concurrent_in(spec, Segment("tune-1", 16)) == 8
    assert max_concurrent_in(spec, Segment("tune-2", 3)) == 3  # an extension of 3 trials
    assert max_concurrent_in(spec_of("--budget", "36M"), Segment("tune-1", 5)) == 5


def test_trials_at_once_say_what_ray_will_run_not_more_than_the_cluster_can():
    from search.cluster.place import NodeShape, Place
    from search.driver import trials_at_once
    from search.spec import demo

    one_gpu = Place("10.0.0.1:6379", "--address", 1, ("10.0.0.1",), 1.0, 0.0,
                    shapes=(NodeShape("10.0.0.1", 8, 1, up=True),))
    spec = dataclasses.replace(demo(), gpus_per_trial=1.0)  # the demo asks for 2 at a time
    assert trials_at_once(spec, one_gpu) == (
        1, "--max-concurrent 2, but what the cluster can run at once is 1")
    assert trials_at_once(dataclasses.replace(spec, gpus_per_trial=0.5), one_gpu) == (2, "--max-concurrent")
    assert trials_at_once(dataclasses.replace(spec, max_concurrent=None, trials=1, confirm=0,
                                                final_eval=0), one_gpu) == (
        1, "what the cluster can run at once")
