"""Our AutoAttack against the reference's rules and, per point, against ART's cascade."""

import pytest
import torch
from torch import nn

import trainer.autoattack as autoattack
from trainer.autoattack import AutoAttack, apgd, fab, square
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


def _points_and_their_second_class(model, digits, n=24):
    """The first n test points, their labels and the class the model ranks second for each."""
    x, y = digits.test.x[:n], digits.test.y[:n]
    with torch.no_grad():
        return x, y, model(x).argsort(1, descending=True)[:, 1]


@pytest.mark.parametrize("targeted", [False, True])
def test_apgd_counts_a_point_broken_if_any_iterate_misclassified_it(robust_fit, digits, targeted):
    model = robust_fit.model.eval()
    x, y, second = _points_and_their_second_class(model, digits)
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
    *_, done = cascade(model, data, [AutoAttack(**budget, fab_iters=20, fab_targets=3)],
                       EvalBudget(EPS, 0.05, "test"))
    ours = done.correct
    art = art_autoattack(model, data.x, data.y, eps=EPS, **budget)
    broken_by_art_only = (~art & ours).nonzero().squeeze(1).tolist()
    assert broken_by_art_only == []
    assert 0.2 < art.float().mean() < 0.9  # a model with both kinds of points


class WithinEps(nn.Module):
    """The model, remembering (one point at a time) the inputs it saw: whether any was outside
    [0, 1], and the smallest L-inf distance from ``x0`` of those it misclassified."""

    def __init__(self, model: nn.Module, x0: torch.Tensor, label: int):
        super().__init__()
        self.model, self.x0, self.label = model, x0, label
        self.nearest_fooled, self.left_box = float("inf"), False

    def forward(self, x):
        out = self.model(x)
        self.left_box |= bool((x < 0).any() or (x > 1).any())
        far = (x - self.x0).flatten(1).abs().amax(1)
        fooled = out.argmax(1) != self.label
        if fooled.any():
            self.nearest_fooled = min(self.nearest_fooled, far[fooled].min().item())
        return out


def fab_one(model, x, y, target, eps, iters=20):
    return fab(model, x, y, target, eps=eps, iters=iters, alpha_max=0.1, eta=1.05, beta=0.9)


def test_fab_breaks_a_point_exactly_when_a_forward_within_eps_misclassified_it(robust_fit, digits):
    model = robust_fit.model.eval()
    x, y, second = _points_and_their_second_class(model, digits)
    outcomes = []
    for i in range(len(y)):
        seen = WithinEps(model, x[i:i + 1], int(y[i]))
        robust = bool(fab_one(seen, x[i:i + 1], y[i:i + 1], second[i:i + 1], EPS)[0])
        assert not seen.left_box
        assert robust is not (seen.nearest_fooled <= EPS)
        outcomes.append(robust)
    assert 0 < sum(outcomes) < len(outcomes)  # the check saw both kinds of points


def test_fab_with_a_large_eps_breaks_a_standard_net_within_eps(standard_fit, digits):
    model = standard_fit.model.eval()
    x, y = digits.test.x[:40], digits.test.y[:40]
    with torch.no_grad():
        logits = model(x)
    keep = logits.argmax(1) == y
    x, y, second = x[keep], y[keep], logits[keep].argsort(1, descending=True)[:, 1]
    eps, broken = 0.5, 0
    for i in range(len(y)):
        seen = WithinEps(model, x[i:i + 1], int(y[i]))
        robust = bool(fab_one(seen, x[i:i + 1], y[i:i + 1], second[i:i + 1], eps, iters=50)[0])
        if not robust:
            broken += 1
            assert seen.nearest_fooled <= eps  # a point it found is within eps
    assert broken >= 0.95 * len(y)
    # and in a batch, as the cascade runs it: the same outcomes as one point at a time
    batch = fab_one(model, x, y, second, eps, iters=50)
    assert int((~batch).sum()) == broken


def test_fab_t_attacks_the_most_likely_wrong_classes_in_order_on_the_points_left(
        robust_fit, digits, monkeypatch):
    model = robust_fit.model.eval()
    x, y = digits.test.x[:30], digits.test.y[:30]
    with torch.no_grad():
        ranked = model(x).argsort(1, descending=True)
    calls = []

    def fake_fab(model, xs, ys, target, **kw):
        calls.append((xs, target))
        alive = torch.ones(len(ys), dtype=torch.bool)
        alive[::4] = False  # breaks every fourth point it is given
        return alive

    monkeypatch.setattr(autoattack, "fab", fake_fab)
    alive = AutoAttack().component("fab-t", model, x, y, eps=EPS, generator=torch.Generator())
    assert len(calls) == 9  # the 2nd .. 10th most likely classes
    left = torch.arange(len(y))
    for rank, (xs, target) in enumerate(calls, start=1):
        assert torch.equal(xs, x[left])  # only the points no earlier run broke
        assert torch.equal(target, ranked[left, rank])
        left = left[torch.arange(len(left)) % 4 != 0]
    assert alive.nonzero().squeeze(1).tolist() == left.tolist()


def test_cascade_runs_fab_t_between_apgd_t_and_square_and_never_raises_accuracy(robust_fit, digits):
    model = robust_fit.model.eval()
    data = Split(digits.test.x[:100], digits.test.y[:100])
    budget = EvalBudget(EPS, 0.05, "test")
    small = dict(apgd_iters=10, targets=2, square_queries=50, fab_iters=20, fab_targets=3)
    with_fab = list(cascade(model, data, [AutoAttack(**small)], budget))
    without = list(cascade(model, data, [AutoAttack(**{**small, "fab_targets": 0})], budget))
    assert [d.attack for d in with_fab] == ["autoattack/apgd-ce", "autoattack/apgd-t",
                                            "autoattack/fab-t", "autoattack/square", "autoattack"]
    acc = {d.attack: d.accuracy for d in with_fab}
    acc_without = {d.attack: d.accuracy for d in without}
    # FAB-T has no randomness: what comes before it is the same run, and it only takes away
    assert acc["autoattack/apgd-t"] == acc_without["autoattack/apgd-t"]
    assert acc["autoattack/fab-t"] <= acc["autoattack/apgd-t"]
    assert acc_without["autoattack/fab-t"] == acc_without["autoattack/apgd-t"]
    assert acc["autoattack"] <= acc_without["autoattack"]
    assert with_fab[-1].correct.sum() <= without[-1].correct.sum()
