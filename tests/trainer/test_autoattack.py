"""Our AutoAttack against the reference's rules and, per point, against ART's cascade."""

import pytest
import torch
from torch import nn

from trainer.autoattack import AutoAttack, apgd, square
from trainer.data import Split
from trainer.evaluation import EvalBudget, cascade

EPS = 0.2  # digits' default radius


class Recorder(nn.Module):
    """The model, remembering whether any input it saw (one point at a time) was misclassified."""

    def __init__(self, model: nn.Module, label: int):
        super().__init__()
        self.model, self.label, self.fooled = model, label, False

    def forward(self, x):
        out = self.model(x)
        self.fooled |= bool((out.argmax(1) != self.label).any())
        return out


@pytest.mark.parametrize("targeted", [False, True])
def test_apgd_counts_a_point_broken_if_any_iterate_misclassified_it(robust_fit, digits, targeted):
    model = robust_fit.model.eval()
    x, y = digits.test.x[:24], digits.test.y[:24]
    with torch.no_grad():
        second = model(x).argsort(1, descending=True)[:, 1]
    outcomes = []
    for i in range(len(y)):
        recorder = Recorder(model, int(y[i]))
        robust = apgd(recorder, x[i:i + 1], y[i:i + 1], eps=EPS, iters=15, rho=0.75,
                      generator=torch.Generator().manual_seed(i),
                      target=second[i:i + 1] if targeted else None)
        # broken exactly when some evaluated iterate was classified as anything but the label
        assert bool(robust[0]) is not recorder.fooled
        outcomes.append(bool(robust[0]))
    assert 0 < sum(outcomes) < len(outcomes)  # the check saw both kinds of points


def test_square_counts_any_misclassifying_query(robust_fit, digits):
    model = robust_fit.model.eval()
    for i in range(12):
        x, y = digits.test.x[i:i + 1], digits.test.y[i:i + 1]
        recorder = Recorder(model, int(y[0]))
        robust = square(recorder, x, y, eps=EPS, queries=60, p_init=0.8,
                        generator=torch.Generator().manual_seed(i))
        assert bool(robust[0]) is not recorder.fooled


def test_ours_breaks_every_point_arts_cascade_breaks(robust_fit, digits):
    from tests.trainer.art_reference import art_autoattack

    model = robust_fit.model.eval()
    data = Split(digits.test.x[:100], digits.test.y[:100])
    budget = dict(apgd_iters=20, targets=3, square_queries=100)
    *_, done = cascade(model, data, [AutoAttack(**budget)], EvalBudget(EPS, 0.05, "test"))
    ours = done.correct
    art = art_autoattack(model, data.x, data.y, eps=EPS, **budget)
    broken_by_art_only = (~art & ours).nonzero().squeeze(1).tolist()
    assert broken_by_art_only == []
    assert 0.2 < art.float().mean() < 0.9  # a model with both kinds of points
