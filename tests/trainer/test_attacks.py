import pytest
import torch

from trainer.attack_names import Attack, parse_attack
from trainer.attacks import cross_entropy, fgsm, kl_from, margin, pgd
from trainer.evaluation import accuracy

SPEC_EPS, SPEC_STEP = 0.2, 0.05


def _batch(digits, n=64):
    return digits.test.x[:n], digits.test.y[:n]


@pytest.mark.parametrize("make", [
    lambda m, x, y, eps: fgsm(m, x, y, eps=eps),
    lambda m, x, y, eps: pgd(m, x, y, eps=eps, step_size=eps / 4, steps=7),
    lambda m, x, y, eps: pgd(m, x, y, eps=eps, step_size=eps, steps=3, loss=margin),
    lambda m, x, y, eps: pgd(m, x, torch.softmax(m(x), 1).detach(), eps=eps, step_size=eps / 4, steps=3,
                             loss=kl_from, start="normal"),
], ids=["fgsm", "pgd", "cw", "trades-kl"])
@pytest.mark.parametrize("eps", [0.03, 0.2, 0.5])
def test_attacks_stay_in_eps_ball_and_unit_box(standard_fit, digits, make, eps):
    x, y = _batch(digits)
    x_adv = make(standard_fit.model, x, y, eps)
    assert x_adv.shape == x.shape and not x_adv.requires_grad
    assert (x_adv - x).abs().max() <= eps + 1e-6
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    assert (x_adv != x).any()


def test_attack_uses_eval_bn_and_leaves_model_untouched(standard_fit, digits):
    model = standard_fit.model
    model.train()
    model.zero_grad(set_to_none=True)
    stats = [b.clone() for b in model.buffers()]
    x, y = _batch(digits)
    pgd(model, x, y, eps=0.2, step_size=0.05, steps=3)
    assert model.training
    assert all(torch.equal(a, b) for a, b in zip(stats, model.buffers()))
    assert all(p.requires_grad and p.grad is None for p in model.parameters())
    model.eval()


def test_stronger_attacks_never_help(standard_fit, digits):
    model, test = standard_fit.model, digits.test

    def acc(name):
        return accuracy(model, test, parse_attack(name), eps=SPEC_EPS, step_size=SPEC_STEP)

    clean, fgsm_acc, pgd5, pgd10, pgd20 = (acc(a) for a in ("clean", "fgsm", "pgd5", "pgd10", "pgd20"))
    assert clean > 0.9
    assert pgd10 <= fgsm_acc <= clean
    assert pgd20 <= pgd10 <= pgd5


def test_losses_point_the_right_way():
    logits = torch.tensor([[2.0, 0.5, -1.0]])
    y = torch.tensor([0])
    assert margin(logits, y).item() == pytest.approx(-1.5)
    assert cross_entropy(logits, y).item() == pytest.approx(torch.log_softmax(logits, 1)[0, 0].neg().item())


@pytest.mark.parametrize("text, expected", [
    ("clean", Attack("clean")), ("FGSM", Attack("fgsm")), ("pgd10", Attack("pgd", 10)),
    ("PGD-20", Attack("pgd", 20)), ("cw", Attack("cw", 20)), ("cw30", Attack("cw", 30)),
    ("autoattack", Attack("autoattack")), ("aa", Attack("autoattack")),
])
def test_parse_attack(text, expected):
    assert parse_attack(text) == expected


@pytest.mark.parametrize("text", ["pgd", "pgd0", "deepfool", "", "cw-x"])
def test_parse_attack_rejects_unknown(text):
    with pytest.raises(ValueError, match="unknown attack"):
        parse_attack(text)
