"""Benchmark the training step: what each speed-up of the default run's step buys.

Why: the default training run has a wall-clock budget, so step time is what
sets how many epochs a host gets. Two comparisons, each interleaved on the
same batches so machine noise hits the variants alike, printed as figures
and ratios. Asserts nothing.

- ``mask_loss``: ``ml.training.losses.dice_focal`` against
  segmentation-models-pytorch's ``DiceLoss`` + ``FocalLoss`` (same
  formulas), on synthetic batches: the step and the loss alone.
- ``recipe_step``: the whole training step (forward, every loss, backward,
  optimiser) on batches whose share of real maps is the recipe's
  (``real_per_epoch`` of every epoch's maps; a real map is one without a
  die target), as training ran up to model v22 (float32, every map
  decoded) and as it runs since: the decoder on the maps with die targets
  only, then also the forward pass in bfloat16 (``ml.training.precision``;
  on a CPU without native bfloat16 that variant is emulated and slow, and
  ``auto`` would not pick it).

    python scripts/bench_train_step.py [--steps 24] [--batch 32] [--encoder E] [--[no-]region-head] [--[no-]input-skip]
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import replace

import numpy as np
import torch

from ml.benchmark import latency_stats
from ml.synth import generate_many
from ml.training.batches import IGNORE, Batch, build_augment, iter_batches
from ml.training.losses import Losses, dice_focal
from ml.training.model import WaferNet
from ml.training.precision import forward_autocast, native_bf16
from ml.training.train import TrainConfig, synth_samples

MaskLoss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
#: Recipe-step variants: (forward precision, decode only the maps with die targets).
RECIPE_VARIANTS: dict[str, tuple[str, bool]] = {
    "fp32_decode_all": ("fp32", False),
    "fp32_decode_synthetic": ("fp32", True),
    "bf16_decode_synthetic": ("bf16", True),
}
SIDE = 64  # the bucket of ~95 % of maps, so every step costs the same


def smp_dice_focal() -> MaskLoss:
    """The loss pair training used before ``dice_focal``.

    Imported here, after ``ml.training``, whose import runs the torchvision shim smp needs.
    """
    from segmentation_models_pytorch.losses import DiceLoss, FocalLoss

    dice = DiceLoss(mode="multiclass", from_logits=True, ignore_index=IGNORE)
    focal = FocalLoss(mode="multiclass", ignore_index=IGNORE)
    return lambda logits, target: dice(logits, target) + focal(logits, target)


def full_batches(cfg: TrainConfig, batch: int, steps: int, real_share: float) -> list[Batch]:
    """``steps`` full 64-px batches of synthetic maps, ``real_share`` of them stripped of their targets."""
    maps = generate_many(1, 4 * batch * steps, n_patterns_p=cfg.synth_n_patterns_p)
    rng = np.random.default_rng(0)
    out = []
    for b in iter_batches(synth_samples(maps), batch, rng, build_augment()):
        if tuple(b.x.shape) != (batch, cfg.model.in_channels, SIDE, SIDE):
            continue
        real = torch.from_numpy(rng.random(batch) < real_share)
        out.append(b._replace(has_mask=b.has_mask & ~real,
                              mask=torch.where(real[:, None, None], IGNORE, b.mask)))
    return out[:steps]


def time_mask_losses(cfg: TrainConfig, batches: Sequence[Batch]) -> dict[str, dict[str, list[float]]]:
    """Step (forward + mask loss + backward + optimiser) and mask loss alone, per loss pair."""
    torch.manual_seed(0)
    net = WaferNet(cfg.model).to(memory_format=torch.channels_last).train()
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr)
    variants: dict[str, MaskLoss] = {"smp_dice_focal": smp_dice_focal(), "dice_focal": dice_focal}
    times: dict[str, dict[str, list[float]]] = {"step": {n: [] for n in variants},
                                                "loss": {n: [] for n in variants}}
    for i, batch in enumerate([batches[0], *batches]):
        x, mask = batch.x.contiguous(memory_format=torch.channels_last), batch.mask
        for name, loss_fn in variants.items():
            t0 = time.perf_counter()
            mask_logits, _, _ = net(x)
            loss = loss_fn(mask_logits, mask)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            t1 = time.perf_counter()
            # Loss alone, forward + backward, on the same logits detached from the network.
            leaf = mask_logits.detach().requires_grad_(True)
            t2 = time.perf_counter()
            loss_fn(leaf, mask).backward()
            t3 = time.perf_counter()
            if i > 0:  # the first batch warms both up
                times["step"][name].append(1000.0 * (t1 - t0))
                times["loss"][name].append(1000.0 * (t3 - t2))
    return times


def time_recipe_steps(cfg: TrainConfig, batches: Sequence[Batch]) -> dict[str, list[float]]:
    """The training loop's whole step, per ``RECIPE_VARIANTS`` entry, on one network."""
    torch.manual_seed(0)
    net = WaferNet(cfg.model).to(memory_format=torch.channels_last).train()
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr)
    losses = Losses(cfg)
    cpu = torch.device("cpu")
    times: dict[str, list[float]] = {name: [] for name in RECIPE_VARIANTS}
    for i, batch in enumerate([batches[0], *batches]):
        x = batch.x.contiguous(memory_format=torch.channels_last)
        for name, (precision, subset) in RECIPE_VARIANTS.items():
            t0 = time.perf_counter()
            with forward_autocast(precision, cpu):
                out = net.outputs(x, decode=batch.has_mask if subset else None)
            mask_logits, region_logits = out.mask_logits, out.region_logits
            if not subset:  # as before: every map decoded, the loss reads the synthetic ones
                mask_logits = mask_logits[batch.has_mask]
                region_logits = None if region_logits is None else region_logits[batch.has_mask]
            regions = None if region_logits is None else (region_logits, batch.regions, x[:, :1])
            loss, _ = losses(mask_logits, out.wafer_logits, batch.target, batch.mask, batch.has_mask, regions)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if i > 0:
                times[name].append(1000.0 * (time.perf_counter() - t0))
    return times


def ratio(times: dict[str, list[float]], base: str, new: str) -> float:
    """How many times faster ``new``'s median is than ``base``'s."""
    return round(float(np.median(times[base]) / np.median(times[new])), 3)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=24, help="Timed steps per variant.")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--encoder", default=None, help="Encoder (default: TrainConfig's).")
    # Unset: ModelConfig's default (the region planes are on since v23, so a plain flag could not turn them off).
    ap.add_argument("--region-head", action=argparse.BooleanOptionalAction, help="With the region planes.")
    ap.add_argument("--input-skip", action=argparse.BooleanOptionalAction,
                    help="With the full-resolution input skip.")
    args = ap.parse_args()
    cfg = TrainConfig()
    chosen = {"encoder": args.encoder, "region_head": args.region_head, "input_skip": args.input_skip}
    model = replace(cfg.model, **{k: v for k, v in chosen.items() if v is not None})
    cfg = replace(cfg, model=model)
    real_share = cfg.real_per_epoch / (cfg.real_per_epoch + cfg.synth_per_epoch)
    synthetic = full_batches(cfg, args.batch, args.steps, 0.0)
    mixed = full_batches(cfg, args.batch, args.steps, real_share)
    masks = time_mask_losses(cfg, synthetic)
    recipe = time_recipe_steps(cfg, mixed)
    report: dict[str, object] = {
        "batch": args.batch,
        "side": SIDE,
        "steps": len(synthetic),
        "torch_threads": torch.get_num_threads(),
        "encoder": model.encoder,
        "region_head": model.region_head,
        "input_skip": model.input_skip,
        "train_step": {name: latency_stats(s) for name, s in masks["step"].items()},
        "mask_loss_fwd_bwd": {name: latency_stats(s) for name, s in masks["loss"].items()},
        "step_speedup_vs_smp": ratio(masks["step"], "smp_dice_focal", "dice_focal"),
        "loss_speedup_vs_smp": round(ratio(masks["loss"], "smp_dice_focal", "dice_focal"), 2),
        "native_bf16": native_bf16(torch.device("cpu")),
        "real_share": round(real_share, 3),
        "recipe_step": {name: latency_stats(s) for name, s in recipe.items()},
        "recipe_speedup_vs_fp32_decode_all": {
            name: ratio(recipe, "fp32_decode_all", name) for name in RECIPE_VARIANTS
        },
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
