"""``python -m trainer.bench``: training throughput of our loop against a textbook fp32 loop.

Both train the same architecture on the same synthetic batches (the dataset fixes only the
shape), set up as fit() sets them up (trainer.loop.training_device: cuDNN's autotuner on a
GPU): every method through fit()'s own epoch, images per second; clean training and PGD-10
AT also against the textbook loop, with time ratios (TRADES and MART have no textbook twin
here).
The reference is how the recipe is usually first written: DataLoader batches, NCHW fp32,
model.train() throughout, and a PGD loop that calls loss.backward() (so it also computes and
accumulates every parameter's gradient it then throws away). On a GPU the model-FLOPs
utilisation is trainer.compute's exact count of our loop's FLOPs over the seconds it took,
against the GPU's data-sheet bf16 peak.

``training_throughput`` measures FLOP/s where it runs (a sweep's driver prices CPU trials with
it, in a Ray task on the trials' resources).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from space_defs.arch import WRNConfig, parse_arch
from space_defs.cli import Parser, integer

from .compute import peak_bf16_flops, training_flops_per_image
from .data import Split
from .datasets import DATASETS, dataset_spec
from .loop import Run, synced_time, training_device
from .method_names import METHODS
from .models import build_model
from .recipe import Recipe

TEXTBOOK = ("standard", "pgd_at")  # the methods ``reference`` writes as a textbook loop


def training_throughput(arch: WRNConfig, *, batch_size: int = 128, threads: int = 1,
                        device: str = "cpu", step_flops: float = 2e10, seconds: float = 1.0) -> float:
    """FLOP/s (trainer.compute's count) of clean training steps of ``arch`` on random images of
    its data shape, with ``threads`` torch threads: what this machine gives one trial. The batch
    is ``batch_size`` images, fewer where a step would cost more than ``step_flops`` (a 36M
    network on a CPU: seconds per image); steps are timed after one warm-up step, until
    ``seconds`` have passed. Attack steps run the same convolutions."""
    torch.set_num_threads(max(1, threads))
    spec = next(s for s in DATASETS.values() if s.data == arch.data)
    per_image = training_flops_per_image(arch, Recipe(method="standard").for_dataset(spec))
    images = max(1, min(batch_size, int(step_flops // per_image)))
    recipe = Recipe(method="standard", batch_size=images).for_dataset(spec)
    g = torch.Generator().manual_seed(0)
    shape = (arch.data.in_channels, arch.data.input_size, arch.data.input_size)
    split = Split(torch.rand(images, *shape, generator=g),
                  torch.randint(arch.data.num_classes, (images,), generator=g)).to(device)
    run = Run.start(arch, recipe, spec, torch.device(device))
    run.train_epoch(split)
    steps, t0 = 0, synced_time(run.device)
    while not steps or synced_time(run.device) - t0 < seconds:
        run.train_epoch(split)
        steps += 1
    return steps * images * per_image / (synced_time(run.device) - t0)


def ours(arch, spec, recipe: Recipe, split: Split, warmup: Split, device) -> float:
    """Seconds for one pass over ``split`` through fit()'s own training epoch."""
    run = Run.start(arch, recipe, spec, device)
    run.train_epoch(warmup)
    t0 = synced_time(device)
    run.train_epoch(split)
    return synced_time(device) - t0


def reference(arch, spec, recipe: Recipe, split: Split, warmup: Split, device) -> float:
    model = build_model(arch, mean=spec.mean, std=spec.std).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=recipe.lr, momentum=recipe.momentum,
                          weight_decay=recipe.weight_decay)
    steps = recipe.steps if recipe.trains_on_attack else 0

    def epoch(data: Split) -> None:
        loader = DataLoader(TensorDataset(data.x.cpu(), data.y.cpu()), batch_size=recipe.batch_size,
                            shuffle=True, drop_last=True)
        model.train()
        for x, y in loader:
            x, y = x.to(device), y.to(device)
            if steps:
                x = _textbook_pgd(model, x, y, eps=recipe.eps, alpha=recipe.step_size, steps=steps)
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
            opt.step()

    epoch(warmup)
    t0 = synced_time(device)
    epoch(split)
    return synced_time(device) - t0


def _textbook_pgd(model: nn.Module, x, y, *, eps: float, alpha: float, steps: int) -> torch.Tensor:
    delta = torch.zeros_like(x).uniform_(-eps, eps)
    delta.requires_grad = True
    for _ in range(steps):
        loss = F.cross_entropy(model(x + delta), y)
        loss.backward()
        delta.data = (delta.data + alpha * delta.grad.sign()).clamp(-eps, eps)
        delta.data = (x + delta.data).clamp(0, 1) - x
        delta.grad.zero_()
    return (x + delta).detach()


def main(argv=None) -> None:
    p = Parser(prog="python -m trainer.bench", description=__doc__.splitlines()[0])
    p.add_argument("--arch", default="WRN-16-1", help="(default: WRN-16-1)")
    p.add_argument("--dataset", default="cifar10", choices=list(DATASETS),
                   help="only its image shape is used (default: cifar10)")
    p.add_argument("--batch-size", type=integer, default=128, help="images per step (default: 128)")
    p.add_argument("--batches", type=integer, default=3,
                   help="timed SGD steps after 1 warm-up step (default: 3)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda if available)")
    args = p.parse_args(argv)

    device = training_device(args.device)
    spec = dataset_spec(args.dataset)
    try:
        arch = parse_arch(args.arch, data=spec.data)
    except ValueError as e:
        p.error(str(e))
    n = args.batch_size * args.batches
    g = torch.Generator().manual_seed(0)
    shape = (spec.data.in_channels, spec.data.input_size, spec.data.input_size)
    split = Split(torch.rand(n, *shape, generator=g),
                  torch.randint(spec.data.num_classes, (n,), generator=g)).to(device)
    warmup = split.head(args.batch_size)
    print(f"{arch.name} ({spec.name} shape), batch {args.batch_size}, {args.batches} timed steps, "
          f"device {torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu'}, "
          f"{torch.get_num_threads()} CPU threads")
    for method in sorted(METHODS.values(), key=lambda m: m.trains_on_attack):  # baseline first
        recipe = Recipe(method=method.name, batch_size=args.batch_size, steps=10).for_dataset(spec)
        t_ours = ours(arch, spec, recipe, split, warmup, device)
        line = f"{method.label.format(steps=recipe.steps):15s} ours {n / t_ours:9.1f} img/s"
        if method.name in TEXTBOOK:
            t_ref = reference(arch, spec, recipe, split, warmup, device)
            line += (f"   reference {n / t_ref:9.1f} img/s   time ours/reference "
                     f"{t_ours / t_ref:.2f}x")
        if device.type == "cuda":
            achieved = training_flops_per_image(arch, recipe) * n / t_ours
            peak = peak_bf16_flops(torch.cuda.get_device_name(device))
            line += f"   {achieved / 1e12:.1f} TFLOP/s" + (f" = {100 * achieved / peak:.1f}% MFU (bf16 peak)" if peak else "")
        print(line)


if __name__ == "__main__":
    main()
