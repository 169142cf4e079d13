"""What search.run says a sweep costs before its first trial, and when it asks for --yes: exact
FLOPs from trainer.compute; hours at a GPU's data-sheet peak (a lower bound), at a CPU floor
(an upper bound, the demo's), or measured; a CPU sweep above a day refused without --yes."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest

from search import cost
from space_defs.budget import format_sci
from search.cluster.place import NodeShape, Place
from space_defs.cli import UsageError
from search.spec import SweepSpec, demo
from trainer.compute import trial_flops

LAPTOP = Place(None, "embedded", 1, ("127.0.0.1",), 0.0, 0.0,
               shapes=(NodeShape("127.0.0.1", 2, 0, up=True),))
CLUSTER_YAML = Place("10.0.0.1:6379", "head", 1, ("10.0.0.1",), 0.0, 8.0, "aws", True,
                     (NodeShape("10.0.0.1", 0, 0, up=True),
                      NodeShape("gpu_a10g", 8, 1, up=False, count=8, gpu_model="A10G"),
                      NodeShape("gpu_l4", 8, 1, up=False, count=8, gpu_model="L4")), 64.0)
HEADLINE = SweepSpec(name="cifar10-36M-trades", budget=36_000_000)


def on_gpus(spec: SweepSpec, gpus: float) -> SweepSpec:
    """The spec as the driver passes it on, its GPUs per trial resolved."""
    return dataclasses.replace(spec, gpus_per_trial=gpus)


def test_the_demo_is_priced_without_measuring_and_runs_without_the_flag():
    price = cost.estimate(on_gpus(demo(), 0), LAPTOP, at_once=2)
    assert price.bound == "at most" and price.sweep_hours < cost.DAY_H
    cost.check(price, LAPTOP, yes=False)  # no UsageError
    assert price.flops == trial_flops(demo().uniform_baseline(), demo().recipe, "digits")
    text = price.describe()
    assert f"{format_sci(price.flops.total)} FLOPs per trial" in text and "not measured" in text
    assert "80 epochs x (1,152 training images" in text
    assert "8 trials (5 searched, at most 3 confirmation runs)" in text
    assert price.sweep_hours < 1.5  # README: under 1.5 hours even at the floor


def test_the_headline_sweep_on_cluster_yaml_is_at_least_hours_at_the_fastest_gpus_peak():
    price = cost.estimate(on_gpus(HEADLINE, 1), CLUSTER_YAML, at_once=8)
    assert price.rate == 125e12 and price.bound == "at least"  # the A10G's, faster than the L4's
    assert price.hours_per_trial == pytest.approx(price.flops.total / 125e12 / 3600)
    assert price.gpu_hours == pytest.approx(16 * price.hours_per_trial)
    assert price.sweep_hours == pytest.approx(2 * price.hours_per_trial)  # 16 trials, 8 at a time
    assert "A10G's bf16 peak" in price.describe() and "GPU-hours" in price.describe()
    assert (format_sci(price.flops.total), f"{price.hours_per_trial:.3g}", f"{price.gpu_hours:.3g}") == (
        "1.38e18", "3.06", "48.9")  # the README's numbers
    cost.check(price, CLUSTER_YAML, yes=False)
    unknown = dataclasses.replace(CLUSTER_YAML, shapes=(NodeShape("x", 8, 1, up=True),))
    assert "time: unknown" in cost.estimate(on_gpus(HEADLINE, 1), unknown, at_once=1).describe()


def test_a_cpu_sweep_above_a_day_is_refused_without_yes():
    arch = HEADLINE.uniform_baseline()
    price = cost.SweepCost(arch, trial_flops(arch, HEADLINE.recipe, "cifar10"), trials=16,
                           at_once=2, gpus_per_trial=0.0, rate=40e9, rate_source="measured here")
    assert price.sweep_hours > 365 * 24
    with pytest.raises(UsageError) as refused:
        cost.check(price, LAPTOP, yes=False)
    line = str(refused.value)
    assert "\n" not in line and "years" in line and "this machine has no GPU" in line
    assert "--yes" in line and "--demo" in line and "GPU cluster" in line
    cost.check(price, LAPTOP, yes=True)


def test_the_driver_prices_a_sweep_without_importing_torch():
    code = ("import sys; from search.cost import estimate; from search.spec import demo; from dataclasses import replace; "
            "from search.cluster.place import Place, NodeShape; "
            "p = Place(None, 'embedded', 1, ('h',), 0.0, 0.0, shapes=(NodeShape('h', 2, 0, up=True),)); "
            "estimate(replace(demo(), gpus_per_trial=0), p, at_once=2); print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
