"""The closed-form cost model equals what torch counts, for any config of the family."""

import random

import pytest

from space_defs import DataShape, WRNConfig, macs, param_count, stage_params, wrn, wrn34_r

torch = pytest.importorskip("torch")
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from trainer.models import build_model  # noqa: E402


def torch_counts(cfg: WRNConfig) -> tuple[int, int]:
    model = build_model(cfg).eval()
    params = sum(p.numel() for p in model.parameters())
    x = torch.zeros(1, cfg.data.in_channels, cfg.data.input_size, cfg.data.input_size)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(x)
    return params, counter.get_total_flops() // 2


def random_configs(n: int, seed: int = 0) -> list[WRNConfig]:
    rng = random.Random(seed)
    return [WRNConfig(depths=tuple(rng.randint(1, 3) for _ in range(3)),
                      channels=tuple(rng.choice([rng.randint(1, 48), 16, 32]) for _ in range(3)),
                      stem_channels=rng.choice([16, 16, rng.randint(1, 32)]),
                      data=DataShape(in_channels=rng.randint(1, 4), num_classes=rng.randint(2, 100),
                                     input_size=rng.randint(1, 33))) for _ in range(n)]


def test_paper_checks():
    assert param_count(wrn(28, 10)) == 36_479_194
    assert param_count(wrn(34, 10)) == 46_160_474
    # WRN-34-R: ~1.5x the params of WRN-34-10 at ~2.9x the MACs (the reason MACs are recorded)
    assert round(param_count(wrn34_r()) / param_count(wrn(34, 10)), 2) == 1.48
    assert round(macs(wrn34_r()) / macs(wrn(34, 10)), 1) == 2.9


def test_wrn_28_10_counted_by_torch():
    assert torch_counts(wrn(28, 10)) == (param_count(wrn(28, 10)), macs(wrn(28, 10)))


@pytest.mark.parametrize("cfg", random_configs(200), ids=lambda c: c.name)
def test_random_configs_match_torch_exactly(cfg):
    assert torch_counts(cfg) == (param_count(cfg), macs(cfg))


def test_stage_params_sum_to_body():
    cfg = wrn34_r()
    stem = 9 * cfg.data.in_channels * cfg.stem_channels
    head = 2 * cfg.channels[2] + cfg.channels[2] * cfg.data.num_classes + cfg.data.num_classes
    assert stem + sum(stage_params(cfg)) + head == param_count(cfg)
