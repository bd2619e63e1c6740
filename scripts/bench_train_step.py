"""Benchmark one training step with the mask loss training uses against smp's Dice + Focal.

Why: the default training run has a wall-clock budget, so step time is what
sets how many epochs a host gets. ``ml.training.losses.dice_focal`` replaced
segmentation-models-pytorch's ``DiceLoss`` + ``FocalLoss`` (same formulas)
to make steps cheaper; this prints both, interleaved on the same batches of
synthetic maps so machine noise hits them alike, as figures and a ratio.
Asserts nothing.

    python scripts/bench_train_step.py [--steps 24] [--batch 32]
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable

import numpy as np
import torch

from ml.benchmark import latency_stats
from ml.synth import generate_many
from ml.training.batches import IGNORE, build_augment, iter_batches
from ml.training.losses import dice_focal
from ml.training.model import WaferNet
from ml.training.train import TrainConfig, synth_samples

MaskLoss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def smp_dice_focal() -> MaskLoss:
    """The loss pair training used before ``dice_focal``.

    Imported here, after ``ml.training``, whose import runs the torchvision shim smp needs.
    """
    from segmentation_models_pytorch.losses import DiceLoss, FocalLoss

    dice = DiceLoss(mode="multiclass", from_logits=True, ignore_index=IGNORE)
    focal = FocalLoss(mode="multiclass", ignore_index=IGNORE)
    return lambda logits, target: dice(logits, target) + focal(logits, target)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=24, help="Timed steps per variant.")
    ap.add_argument("--batch", type=int, default=32)
    args = ap.parse_args()
    cfg = TrainConfig()
    maps = generate_many(1, 4 * args.batch * args.steps, n_patterns_p=cfg.synth_n_patterns_p)
    side = 64  # the bucket of ~95 % of maps, so every step costs the same
    batches = [
        b for b in iter_batches(synth_samples(maps), args.batch, np.random.default_rng(0), build_augment())
        if tuple(b.x.shape) == (args.batch, cfg.model.in_channels, side, side)
    ][: args.steps]
    torch.manual_seed(0)
    net = WaferNet(cfg.model).to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr)
    net.train()
    variants: dict[str, MaskLoss] = {"smp_dice_focal": smp_dice_focal(), "dice_focal": dice_focal}
    step_ms: dict[str, list[float]] = {name: [] for name in variants}
    loss_ms: dict[str, list[float]] = {name: [] for name in variants}
    for i, batch in enumerate([batches[0], *batches]):
        x, mask = batch.x.contiguous(memory_format=torch.channels_last), batch.mask
        for name, loss_fn in variants.items():
            t0 = time.perf_counter()
            mask_logits, _, _ = net(x)
            loss = loss_fn(mask_logits, mask)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            t2 = time.perf_counter()
            # Loss alone, forward + backward, on the same logits detached from the network.
            leaf = mask_logits.detach().requires_grad_(True)
            t3 = time.perf_counter()
            loss_fn(leaf, mask).backward()
            t4 = time.perf_counter()
            if i > 0:  # the first batch warms both up
                step_ms[name].append(1000.0 * (t2 - t0))
                loss_ms[name].append(1000.0 * (t4 - t3))
    report: dict[str, object] = {
        "batch": args.batch,
        "side": side,
        "steps": len(batches),
        "torch_threads": torch.get_num_threads(),
        "train_step": {name: latency_stats(s) for name, s in step_ms.items()},
        "mask_loss_fwd_bwd": {name: latency_stats(s) for name, s in loss_ms.items()},
    }
    base, new = np.median(step_ms["smp_dice_focal"]), np.median(step_ms["dice_focal"])
    report["step_speedup_vs_smp"] = round(float(base / new), 3)
    report["loss_speedup_vs_smp"] = round(
        float(np.median(loss_ms["smp_dice_focal"]) / np.median(loss_ms["dice_focal"])), 2
    )
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
