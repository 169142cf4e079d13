"""The seed's evaluation protocol (HanxunH/RobustWRN evaluator.py as its main.py calls it),
held point by point against an independent implementation written here from its description:

- PGD-k: start at x + U(-eps, eps) per pixel, *not* clipped to [0, 1]; k times: ascend the
  batch-mean cross-entropy by step * sign(gradient), then x' = x + clip(x' - x, -eps, eps),
  then clip x' to [0, 1]; the last iterate is scored.
- CW-k: the same loop on -relu(sum over the batch of (true logit - best wrong logit)), the best
  wrong logit being the top logit, or the second where the top is the true class.
- batches of 128 in the test split's order; the step is eps / 10 (0.8/255 at 8/255).
"""

import pytest
import torch
import torch.nn.functional as F

from trainer.data import eval_batches
from trainer.evaluation import cascade, eval_budget
from trainer.attack_names import parse_attack
from trainer.attacks import batch_hinge_margin, margin, pgd
from trainer.protocols import PROTOCOLS, protocol

SEED = PROTOCOLS["robustwrn"]


def described_attack(model, x, y, *, eps, step, steps, loss, noise):
    """One batch of the seed's PGD or CW from the description above; which points survive."""
    model.eval()
    adv = x + noise
    for _ in range(steps):
        adv = adv.detach().requires_grad_(True)
        logits = model(adv)
        if loss == "ce":
            objective = F.cross_entropy(logits, y)
        else:
            top_two = logits.argsort(1)[:, -2:]
            other = torch.where(top_two[:, -1] == y, top_two[:, -2], top_two[:, -1])
            true_sum = logits.gather(1, y[:, None]).sum()
            other_sum = logits.gather(1, other[:, None]).sum()
            objective = -F.relu(true_sum - other_sum)
        grad, = torch.autograd.grad(objective, adv)
        adv = adv.detach() + step * grad.sign()
        adv = torch.clamp(x + torch.clamp(adv - x, -eps, eps), 0, 1)
    with torch.no_grad():
        return model(adv).argmax(1) == y


def described_protocol(model, split, *, eps, steps, loss, seed=0):
    """The whole split in the seed's batches; the random starts drawn as our attack draws them
    (one generator seeded once, a uniform draw per batch), so the two can be compared point by
    point."""
    generator = torch.Generator().manual_seed(seed)
    masks = []
    for x, y in eval_batches(split, batch_size=128):
        noise = torch.empty_like(x).uniform_(-eps, eps, generator=generator)
        masks.append(described_attack(model, x, y, eps=eps, step=eps / 10, steps=steps, loss=loss,
                                      noise=noise))
    return torch.cat(masks)


@pytest.mark.parametrize("eps", [8 / 255, 0.2])
def test_our_pgd_and_cw_under_the_seeds_protocol_agree_point_by_point(robust_fit, digits, eps):
    model = robust_fit.model.eval()
    budget = eval_budget(None, (eps, eps / 4), step_ratio=SEED.step_ratio)
    assert budget.step_size == pytest.approx(eps / 10)
    data = digits.test.head(256)  # two of the seed's batches
    ours = {d.attack: d for d in cascade(model, data, [parse_attack("pgd20"), parse_attack("cw20")],
                                         budget, protocol=SEED) if d.final}
    for name, loss in (("pgd20", "ce"), ("cw20", "cw")):
        reference = described_protocol(model, data, eps=eps, steps=20, loss=loss)
        assert torch.equal(ours[name].correct, reference), name
        assert (ours[name].protocol, ours[name].steps) == ("robustwrn", 20)
        assert ours[name].step_size == pytest.approx(eps / 10)
    if eps == 0.2:  # not a vacuous agreement: at the trained eps they break many points
        assert 0.1 < ours["pgd20"].accuracy < 0.9 and ours["cw20"].accuracy < 0.9


def test_the_seeds_cw_loss_moves_a_batch_only_while_its_summed_margin_is_positive():
    logits = torch.tensor([[3.0, 1.0, 0.0], [0.0, 2.0, 1.0]], requires_grad=True)
    y = torch.tensor([0, 0])  # margins +2 and -2: the sum is 0, so no point moves
    grad, = torch.autograd.grad(batch_hinge_margin(logits, y), logits)
    assert not grad.any()
    y = torch.tensor([0, 1])  # margins +2 and +1: margin's gradient, point by point
    hinge, = torch.autograd.grad(batch_hinge_margin(logits, y), logits)
    plain, = torch.autograd.grad(margin(logits, y), logits)
    assert torch.equal(hinge, plain) and hinge.any()


def test_the_seeds_start_is_not_clipped_to_the_unit_box():
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2))
    x, y = torch.ones(1, 1, 2, 2), torch.tensor([0])
    seen = []
    model.register_forward_hook(lambda m, args, out: seen.append(args[0].detach().clone()))
    pgd(model, x, y, eps=0.5, step_size=0.1, steps=1, start_in_box=False,
        generator=torch.Generator().manual_seed(0))
    assert seen[0].max() > 1  # the first gradient is taken outside [0, 1] ...
    seen.clear()
    pgd(model, x, y, eps=0.5, step_size=0.1, steps=1, generator=torch.Generator().manual_seed(0))
    assert seen[0].max() <= 1  # ... where ours projects the start first


def test_unknown_protocol_is_a_clear_error():
    with pytest.raises(ValueError, match="default, robustwrn"):
        protocol("madry")
