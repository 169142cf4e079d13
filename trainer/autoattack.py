"""AutoAttack (Croce & Hein, ICML 2020), the standard L-inf version, written from the papers and
the reference code's rules (fra31/auto-attack), in torch.

Components, each run only on the points every earlier one left unbroken: APGD-CE (100
iterations, 1 restart), APGD-T (targeted DLR loss against each of the 9 most likely wrong
classes, 100 iterations each), FAB-T (the targeted Fast Adaptive Boundary attack, Croce & Hein,
ICML 2020: against each of the 9 most likely wrong classes, 100 iterations each, 1 restart),
Square (5,000 queries, margin loss). The reference's rules that hold here (a test holds our
per-point outcomes against ART's on the same models):

- a point counts as broken if any iterate of any component misclassified it (not only the
  last iterate, which is what ART's APGD returns);
- targeted runs count a misclassification into any class as broken, not only the target;
- APGD starts at a random vertex-scaled point of the eps-ball; its step size starts at 2 eps
  and halves at the checkpoints (after 22% of the iterations, then 3% fewer each time, at
  least 6%) where the loss rose in at most 75% of the steps since the last checkpoint, or the
  best loss did not improve and the step was not halved at the last one; a halved point
  restarts from its best-loss iterate; momentum 0.75;
- FAB-T starts at the clean point (the reference's random start is only for restarts after the
  first, and the standard version runs one); each step linearises f_t - f_y at the iterate,
  projects the iterate and the clean point onto that hyperplane within [0, 1] (the exact
  L-inf projection, by a sort), moves to the convex combination with weight
  min(max(a1 / (a1 + a2), 0), alpha_max) (a1, a2 the two projections' lengths) extrapolated by
  eta = 1.05, alpha_max = 0.1; an iterate that misclassifies is pulled back towards the clean
  point by beta = 0.9. FAB minimises the distance, so an iterate counts only within eps of the
  clean point (the reference's check on the smallest one found);
- Square draws its square's position and signs per image, as in the Square Attack paper (the
  reference's PyTorch port draws one position per batch: per point, the same distribution),
  and starts from vertical stripes of +-eps.

Where it differs from the reference's standard version: Square's square-size schedule (the
paper's, over 10,000 iterations) is rescaled to the query budget, as the reference's
``resc_schedule=True`` does and its standard version does not; a square may sit on the last row
and column (the reference's position draw, ``random_int(0, h - s)``, never reaches them, which
weakens it on small images). FAB-T's trajectory is the reference's, but it also counts the
points where the forward pass of a gradient (taken after the pull back by beta) misclassified
within eps, which the reference does not look at; a point leaves FAB-T's batch once broken
(the reference goes on shrinking its distance, which cannot change whether it is within eps).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .attacks import attacking, project

COMPONENTS = ("apgd-ce", "apgd-t", "fab-t", "square")  # in order; trainer.evaluation runs the cascade
FAB_PASSES = 1.4  # gradient passes per FAB iteration (a gradient and a forward pass): 1.41 on CPU


@dataclass(frozen=True)
class AutoAttack:
    apgd_iters: int = 100  # iterations per APGD run (1 restart each, as in the standard version)
    targets: int = 9  # most likely wrong classes attacked by APGD-T, one run each
    fab_iters: int = 100  # iterations per FAB-T run (1 restart, as in the standard version)
    fab_targets: int = 9  # most likely wrong classes attacked by FAB-T, one run each
    alpha_max: float = 0.1  # FAB: the largest weight of the clean point's projection in a step
    eta: float = 1.05  # FAB: overshoot of the projections
    beta: float = 0.9  # FAB: pull back towards the clean point after a misclassifying step
    square_queries: int = 5000  # Square attack's queries per point
    rho: float = 0.75  # APGD: halve the step where the loss rose in fewer than this share of steps
    p_init: float = 0.8  # Square: initial share of the image a square covers
    seed: int = 0

    name = "autoattack"

    def passes(self, component: str, num_classes: int) -> float:
        """The cost of one component per point, in gradient passes, for estimates of the time
        left. A Square query (a forward pass and its bookkeeping) measured half a pass on CPU; a
        FAB iteration (a gradient, a forward pass and the projection's sort) 1.4 (FAB_PASSES)."""
        if component == "apgd-ce":
            return self.apgd_iters
        if component == "apgd-t":
            return self.apgd_iters * self.n_targets(num_classes)
        if component == "fab-t":
            return self.fab_iters * self.n_fab_targets(num_classes) * FAB_PASSES
        return self.square_queries / 2

    def n_targets(self, num_classes: int) -> int:
        return min(self.targets, num_classes - 1) if num_classes >= 4 else 0  # DLR-T needs 4

    def n_fab_targets(self, num_classes: int) -> int:
        return min(self.fab_targets, num_classes - 1)

    def component(self, name: str, model: nn.Module, x: torch.Tensor, y: torch.Tensor, *,
                  eps: float, generator: torch.Generator) -> torch.Tensor:
        """Boolean mask over the batch: still correctly classified after component ``name``."""
        model.eval()
        if name == "apgd-ce":
            return apgd(model, x, y, eps=eps, iters=self.apgd_iters, rho=self.rho,
                        generator=generator)
        if name == "apgd-t":
            return _each_target(model, x, y, self.n_targets, lambda idx, target: apgd(
                model, x[idx], y[idx], eps=eps, iters=self.apgd_iters, rho=self.rho,
                generator=generator, target=target))
        if name == "fab-t":
            return _each_target(model, x, y, self.n_fab_targets, lambda idx, target: fab(
                model, x[idx], y[idx], target, eps=eps, iters=self.fab_iters,
                alpha_max=self.alpha_max, eta=self.eta, beta=self.beta))
        if name == "square":
            return square(model, x, y, eps=eps, queries=self.square_queries, p_init=self.p_init,
                          generator=generator)
        raise ValueError(f"unknown AutoAttack component {name!r}; one of {', '.join(COMPONENTS)}")


def _each_target(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                 n_targets: Callable[[int], int],
                 attack: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """A targeted component: ``attack(idx, target)`` against the 2nd, 3rd, ... most likely
    class (``n_targets(classes)`` of them), each run only on the points still unbroken."""
    alive = torch.ones(len(y), dtype=torch.bool, device=y.device)
    with torch.no_grad():
        ranked = model(x).argsort(1, descending=True)
    for rank in range(1, n_targets(ranked.shape[1]) + 1):
        idx = alive.nonzero().squeeze(1)
        if len(idx) == 0:
            break
        alive[idx] = attack(idx, ranked[idx, rank])
    return alive


def ce_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits.float(), y, reduction="none")


def dlr_targeted_loss(logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Targeted difference-of-logits ratio: -(z_y - z_t) / (z_(1) - (z_(3) + z_(4)) / 2)."""
    z = logits.float()
    ordered = z.sort(1, descending=True).values
    rows = torch.arange(len(y), device=y.device)
    return -(z[rows, y] - z[rows, target]) / (ordered[:, 0] - (ordered[:, 2] + ordered[:, 3]) / 2 + 1e-12)


def apgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, iters: int, rho: float,
         generator: torch.Generator, target: torch.Tensor | None = None) -> torch.Tensor:
    """APGD (L-inf): ascends cross-entropy, or with ``target`` the targeted DLR loss; returns
    which points no iterate misclassified.

    Points leave the batch once misclassified: their outcome is settled, and the others'
    trajectories do not depend on them (the model is in eval mode).
    """
    live = torch.arange(len(y), device=y.device)  # batch indices still attacked
    robust = torch.ones(len(y), dtype=torch.bool, device=y.device)
    t = torch.rand(x.shape, generator=generator, device=x.device) * 2 - 1
    scale = t.flatten(1).abs().amax(1).clamp_min(1e-12).view(-1, *[1] * (x.dim() - 1))
    x_adv = (x + eps * t / scale).clamp(0, 1)

    def loss_and_grad(points: torch.Tensor):
        points = points.clone().requires_grad_(True)
        logits = model(points)
        value = ce_loss(logits, y[live]) if target is None else \
            dlr_targeted_loss(logits, y[live], target[live])
        grad, = torch.autograd.grad(value.sum(), points)
        return value.detach(), grad, logits.detach().argmax(1) == y[live]

    with attacking(model):
        value, grad, ok = loss_and_grad(x_adv)
        state = dict(x0=x, x_adv=x_adv, grad=grad, x_best=x_adv, grad_best=grad, loss_best=value,
                     x_prev=x_adv, step=torch.full((len(y),), 2 * eps, device=x.device),
                     best_at_check=value, reduced_at_check=torch.ones_like(ok),
                     history=value[None])  # the loss at each iterate since the last check
        gap, shrink, least = max(int(0.22 * iters), 1), max(int(0.03 * iters), 1), max(int(0.06 * iters), 1)
        since_check = 0
        for i in range(iters + 1):
            if not ok.all():  # misclassified: broken for good, and out of the batch
                robust[live[~ok]] = False
                live = live[ok]
                state = {k: v[:, ok] if k == "history" else v[ok] for k, v in state.items()}
            if i == iters or len(live) == 0:
                break
            g = state
            with torch.no_grad():
                s = g["step"].view(-1, *[1] * (x.dim() - 1))
                a = 0.75 if i > 0 else 1.0
                z = project(g["x_adv"] + s * g["grad"].sign(), g["x0"], eps)
                x_new = project(g["x_adv"] + a * (z - g["x_adv"]) + (1 - a) * (g["x_adv"] - g["x_prev"]),
                                g["x0"], eps)
            value, grad, ok = loss_and_grad(x_new)
            improved = (value > g["loss_best"])[:, None, None, None]
            g.update(x_prev=g["x_adv"], x_adv=x_new, grad=grad,
                     x_best=torch.where(improved, x_new, g["x_best"]),
                     grad_best=torch.where(improved, grad, g["grad_best"]),
                     loss_best=torch.maximum(value, g["loss_best"]),
                     history=torch.cat([g["history"], value[None]]))
            since_check += 1
            if since_check == gap:  # the checkpoint: halve the step where progress stopped
                rises = (g["history"][1:] > g["history"][:-1]).float().sum(0)
                reduce = (rises <= gap * rho) | (~g["reduced_at_check"] & (g["best_at_check"] >= g["loss_best"]))
                back = reduce[:, None, None, None]
                g.update(step=torch.where(reduce, g["step"] / 2, g["step"]),
                         x_adv=torch.where(back, g["x_best"], g["x_adv"]),
                         grad=torch.where(back, g["grad_best"], g["grad"]),
                         reduced_at_check=reduce, best_at_check=g["loss_best"],
                         history=g["history"][-1:])
                since_check, gap = 0, max(gap - shrink, least)
    return robust


def project_linf_hyperplane(t: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per row of the flat points ``t``: the step d of least L-inf norm with <w, t + d> = b and
    t + d in [0, 1]; where the box does not reach the hyperplane, the step to the box's corner
    nearest it (FAB's L-inf projection).

    With the sign of w chosen so that c = <w, t> - b >= 0, a step of norm lam lowers <w, .> by
    at most g(lam) = sum_i |w_i| min(lam, room_i), room_i being how far coordinate i can move
    against w inside the box; g is piecewise linear in lam with kinks at the sorted rooms, and
    the answer is the least lam with g(lam) = c, moving every coordinate by min(lam, room_i).
    """
    c = (w * t).sum(1) - b
    flip = torch.where(c >= 0, 1.0, -1.0).to(w.dtype)
    w, c = w * flip[:, None], c * flip
    room = torch.where(w > 0, t, 1 - t)
    rooms, order = room.sort(1)
    weights = w.abs().gather(1, order)
    below = (weights * rooms).cumsum(1) - weights * rooms  # sum of |w_j| room_j over smaller rooms
    above = weights.flip(1).cumsum(1).flip(1)  # sum of |w_j| over this room and the larger ones
    reach = below + rooms * above  # g at each kink
    k = (reach < c[:, None]).sum(1, keepdim=True)  # the segment where g reaches c
    kk = k.clamp_max(t.shape[1] - 1)
    lam = ((c[:, None] - below.gather(1, kk)) / above.gather(1, kk).clamp_min(1e-12)).clamp_min(0)
    lam = torch.where(k < t.shape[1], lam, torch.full_like(lam, math.inf))  # out of reach: corner
    return -w.sign() * torch.minimum(room, lam)


def fab(model: nn.Module, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor, *, eps: float,
        iters: int, alpha_max: float, eta: float, beta: float) -> torch.Tensor:
    """Targeted FAB (L-inf) from the clean point, towards the boundary between y and
    ``target``; returns which points no forward pass misclassified within eps of the clean one.

    A point leaves the batch once broken; the others go on as they would with it there.
    """
    robust = torch.ones(len(y), dtype=torch.bool, device=y.device)
    live = torch.arange(len(y), device=y.device)
    x0, x1, yl, tl = x, x.clone(), y, target

    def broken(points: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        far = (points - x0).flatten(1).abs().amax(1)
        return (logits.argmax(1) != yl) & (far <= eps)

    with attacking(model):
        for _ in range(iters):
            points = x1.clone().requires_grad_(True)
            logits = model(points).float()
            rows = torch.arange(len(live), device=y.device)
            gap = logits[rows, tl] - logits[rows, yl]  # > 0: across the boundary to the target
            grad, = torch.autograd.grad(gap.sum(), points)
            with torch.no_grad():
                hit = broken(x1, logits)
                w = grad.flatten(1)
                b = (w * x1.flatten(1)).sum(1) - gap.detach()  # the linearisation: <w, z> = b
                n = len(live)
                d = project_linf_hyperplane(torch.cat([x1.flatten(1), x0.flatten(1)]),
                                            torch.cat([w, w]), torch.cat([b, b]))
                size = d.abs().amax(1).clamp_min(1e-8)
                alpha = (size[:n] / (size[:n] + size[n:])).clamp(0, alpha_max).view(-1, *[1] * (x.dim() - 1))
                d1, d2 = d[:n].view_as(x1), d[n:].view_as(x1)
                x_new = ((x1 + eta * d1) * (1 - alpha) + (x0 + eta * d2) * alpha).clamp(0, 1)
                logits = model(x_new).float()
                hit |= broken(x_new, logits)
                over = (logits.argmax(1) != yl).view(-1, *[1] * (x.dim() - 1))
                x1 = torch.where(over, x0 + (x_new - x0) * beta, x_new)
            if hit.any():
                robust[live[hit]] = False
                keep = ~hit
                live, x0, x1, yl, tl = live[keep], x0[keep], x1[keep], yl[keep], tl[keep]
                if len(live) == 0:
                    break
    return robust


def _square_size(p_init: float, query: int, queries: int) -> float:
    """Square's share of the image at ``query``, halving on the paper's schedule of 10,000."""
    it = int(query / queries * 10000)
    for bound, divisor in ((10, 1), (50, 2), (200, 4), (500, 8), (1000, 16), (2000, 32),
                           (4000, 64), (6000, 128), (8000, 256)):
        if it <= bound:
            return p_init / divisor
    return p_init / 512


def square(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, queries: int,
           p_init: float, generator: torch.Generator) -> torch.Tensor:
    """Square Attack (L-inf, margin loss): random +-2 eps squares on the vertices of the eps-ball,
    each image with its own position and signs; returns which points no query misclassified."""
    n, c, h, w = x.shape
    device = x.device

    def margin(points: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            z = model(points).float()
        rows = torch.arange(len(labels), device=device)
        true = z[rows, labels]
        z[rows, labels] = -math.inf
        return true - z.amax(1)

    def signs(*shape: int) -> torch.Tensor:
        return torch.randint(0, 2, shape, generator=generator, device=device).float() * 2 - 1

    with attacking(model):
        x_best = (x + eps * signs(n, c, 1, w)).clamp(0, 1)
        best = margin(x_best, y)
        live = (best > 0).nonzero().squeeze(1)
        rows, cols = torch.arange(h, device=device), torch.arange(w, device=device)
        for query in range(queries):
            if len(live) == 0:
                break
            p = _square_size(p_init, query, queries)
            s = min(max(int(round(math.sqrt(p * h * w))), 1), h, w)
            k = len(live)
            top = torch.randint(0, h - s + 1, (k,), generator=generator, device=device)
            left = torch.randint(0, w - s + 1, (k,), generator=generator, device=device)
            in_rows = (rows >= top[:, None]) & (rows < top[:, None] + s)
            in_cols = (cols >= left[:, None]) & (cols < left[:, None] + s)
            window = (in_rows[:, :, None] & in_cols[:, None, :])[:, None].float()
            delta = window * (2 * eps) * signs(k, c, 1, 1)
            x_new = project(x_best[live] + delta, x[live], eps)
            new = margin(x_new, y[live])
            better = new < best[live]
            x_best[live[better]] = x_new[better]
            best[live[better]] = new[better]
            live = live[best[live] > 0]
    return best > 0
