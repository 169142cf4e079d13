"""A training method or an attack is one registry entry: registered there alone, the recipe
accepts it, trainer.compute prices it, fit()'s loop and the bench run it, and the evaluation
parses and runs it."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tests.trainer.test_compute import ARCH, DIGITS, FlopCount
from trainer.attack_names import ATTACKS, Attack, AttackKind, parse_attack
from trainer.attacks import cross_entropy, pgd, project
from trainer.bench import main as bench
from trainer.compute import training_flops_per_image
from trainer.data import Split
from trainer.evaluation import EvalBudget, cascade, evaluate
from trainer.loop import Run
from trainer.method_names import CLEAN_FIRST, METHODS, Method
from trainer.methods import MethodOutput
from trainer.models import build_model
from trainer.recipe import Recipe


def _both_ends(model, x, y, budget, beta):
    """Cross-entropy on the clean batch and on one PGD example of it."""
    x_adv = pgd(model, x, y, eps=budget.eps, step_size=budget.step_size, steps=budget.steps,
                loss=cross_entropy)
    clean, adv = model(x), model(x_adv)
    loss = F.cross_entropy(clean.float(), y) + beta * F.cross_entropy(adv.float(), y)
    return MethodOutput(loss, clean.detach(), adv.detach())


def _sign_noise(model, x, y, *, steps, eps, step_size, generator, protocol):
    """``steps`` random signed steps, projected: a gradient-free attack."""
    x_adv = x
    for _ in range(steps):
        noise = torch.randint(2, x.shape, generator=generator, device=x.device) * 2 - 1
        x_adv = project(x_adv + step_size * noise, x, eps)
    return x_adv


@pytest.fixture
def both_ends(monkeypatch):
    method = Method("both_ends", "clean and PGD cross-entropy", "BOTH-{steps}",
                    f"{__name__}:_both_ends", forwards=0, attacks=1, training_steps=2,
                    selected_by=CLEAN_FIRST)
    with pytest.raises(ValueError, match="method must be one of"):
        Recipe(method=method.name)
    monkeypatch.setitem(METHODS, method.name, method)
    return method


@pytest.fixture
def sign_noise(monkeypatch):
    kind = AttackKind("noise", "random signed steps", f"{__name__}:_sign_noise")
    with pytest.raises(ValueError, match="unknown attack"):
        parse_attack("noise3")
    monkeypatch.setitem(ATTACKS, kind.name, kind)
    return kind


def test_a_method_registered_in_one_entry_is_checked_priced_run_and_benched(both_ends, capsys):
    recipe = Recipe(method=both_ends.name, batch_size=10, steps=3).for_dataset(DIGITS)
    assert recipe.selected_by == CLEAN_FIRST and recipe.trains_on_attack
    run = Run.start(ARCH, recipe, DIGITS, torch.device("cpu"))
    g = torch.Generator().manual_seed(0)
    split = Split(torch.rand(20, 1, 8, 8, generator=g), torch.randint(10, (20,), generator=g))
    with FlopCount() as counted:
        loss, *_ = run.train_epoch(split)
    assert counted.total == 20 * training_flops_per_image(ARCH, recipe) and loss > 0
    bench(["--arch", "WRN-10-1", "--dataset", "digits", "--batch-size", "8", "--batches", "1",
           "--device", "cpu"])
    assert "BOTH-10 " in capsys.readouterr().out


def test_an_attack_registered_in_one_entry_is_parsed_and_evaluated(sign_noise, digits):
    assert parse_attack("Noise-3") == Attack("noise", 3) and Attack("noise", 3).name == "noise3"
    with pytest.raises(ValueError, match="noise<k>"):
        parse_attack("noise")
    model = build_model(ARCH, mean=DIGITS.mean, std=DIGITS.std).eval()
    data = digits.test.head(64)
    budget = EvalBudget(0.2, 0.05, "given")
    done, = cascade(model, data, [parse_attack("noise3")], budget, seed=1)
    x_adv = _sign_noise(model, data.x, data.y, steps=3, eps=0.2, step_size=0.05,
                        generator=torch.Generator().manual_seed(1), protocol=None)
    with torch.no_grad():
        expected = model(x_adv).argmax(1) == data.y
    assert torch.equal(done.correct, expected)
    assert (done.attack, done.steps, done.step_size) == ("noise3", 3, 0.05)
    assert set(evaluate(model, "digits", attacks=("clean", "noise2"), n=32, eps=0.2,
                        step_size=0.05, device="cpu")) == {"clean", "noise2"}
