import math

import pytest
import torch

from trainer.methods import mart_loss, trades_loss

CLEAN = [[1.0, 2.0, 0.0], [0.5, -1.0, 3.0]]
ADV = [[0.5, 1.0, 1.0], [2.0, 0.0, 1.0]]
Y = [1, 2]


def softmax(row):
    e = [math.exp(v) for v in row]
    return [v / sum(e) for v in e]


def test_trades_equals_its_formula():
    beta = 6.0
    expected = 0.0
    for c, a, y in zip(CLEAN, ADV, Y):
        p, q = softmax(c), softmax(a)
        ce = -math.log(p[y])
        kl = sum(pi * math.log(pi / qi) for pi, qi in zip(p, q))
        expected += (ce + beta * kl) / len(Y)
    got = trades_loss(torch.tensor(CLEAN), torch.tensor(ADV), torch.tensor(Y), beta)
    assert got.item() == pytest.approx(expected, rel=1e-5)


def test_mart_equals_its_formula():
    beta = 6.0
    expected = 0.0
    for c, a, y in zip(CLEAN, ADV, Y):
        p, q = softmax(c), softmax(a)
        wrong = max((k for k in range(3) if k != y), key=lambda k: q[k])
        bce = -math.log(q[y]) - math.log(1.0001 - q[wrong] + 1e-12)
        kl = sum(pi * math.log((pi + 1e-12) / (qi + 1e-12)) for pi, qi in zip(p, q))
        expected += (bce + beta * kl * (1.0000001 - p[y])) / len(Y)
    got = mart_loss(torch.tensor(CLEAN), torch.tensor(ADV), torch.tensor(Y), beta)
    assert got.item() == pytest.approx(expected, rel=1e-5)


def test_trades_with_beta_zero_is_clean_cross_entropy():
    got = trades_loss(torch.tensor(CLEAN), torch.tensor(ADV), torch.tensor(Y), 0.0)
    assert got.item() == pytest.approx(torch.nn.functional.cross_entropy(torch.tensor(CLEAN), torch.tensor(Y)).item())
