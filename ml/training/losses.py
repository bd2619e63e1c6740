"""Training losses: wafer BCE + softmax CE, Dice + Focal on die masks, and the region loss.

Why the mask loss is written out instead of taken from
segmentation-models-pytorch: smp's multiclass ``FocalLoss`` loops over the
nine classes and boolean-indexes the ignored pixels out of each one, and
``DiceLoss`` builds its one-hot target separately. On a slow 2-core host
(2026-12-02, ``scripts/bench_train_step.py``) the pair took 108 ms
(forward + backward, batch 32 at 64x64) and a training step 418 ms;
``dice_focal`` computes the same two formulas on one shared one-hot tensor
in 45 ms, and the step takes 370 ms (1.13x). The training budget is
wall-clock, so the saving buys the default run more steps on the hosts
that have the fewest. Values and gradients match smp's to float rounding
(tests/ml/test_ml_training.py), so every recipe and measurement from before
carries over.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn
from torch.nn import functional as F

from ml.training.batches import IGNORE

if TYPE_CHECKING:
    from ml.training.train import TrainConfig


def dice_focal(logits: torch.Tensor, target: torch.Tensor, gamma: float = 2.0, eps: float = 1e-7) -> torch.Tensor:
    """Multiclass soft Dice + focal loss over ``(N, C, H, W)`` logits, ``IGNORE`` pixels left out.

    Equal to smp's ``DiceLoss(mode="multiclass", from_logits=True,
    ignore_index=IGNORE) + FocalLoss(mode="multiclass", ignore_index=IGNORE)``:
    Dice per class over the whole batch (classes with no true pixel count
    as zero loss but still in the mean), focal loss as one-vs-rest sigmoid
    per class, averaged over valid pixels, then over classes.
    """
    kept = target != IGNORE
    valid = kept.unsqueeze(1).to(logits.dtype)
    onehot = F.one_hot(torch.where(kept, target, 0), logits.shape[1])
    onehot = onehot.permute(0, 3, 1, 2).to(logits.dtype) * valid
    dims = (0, 2, 3)
    prob = logits.softmax(1) * valid
    true_sum = onehot.sum(dims)
    score = (prob * onehot).sum(dims) / (0.5 * (prob.sum(dims) + true_sum)).clamp_min(eps)
    dice = ((1.0 - score) * (true_sum > 0)).mean()
    bce = F.binary_cross_entropy_with_logits(logits, onehot, reduction="none")
    focal = ((1.0 - torch.exp(-bce)).pow(gamma) * bce * valid).sum(dims) / valid.sum().clamp_min(1.0)
    return dice + focal.mean()


def region_loss(logits: torch.Tensor, target: torch.Tensor, on_wafer: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """BCE + soft Dice per region plane over ``(N, R, H, W)`` logits, on-wafer pixels only.

    Why a region target next to the die labels: a die label exists only
    where a die fails and names one pattern, so the softmax head never
    hears that the passing dies of a donut's band are the donut, nor that
    a scratch runs on through a centre blob (there the label is Scratch by
    the precedence rule, on dies that look like the blob's). The region
    planes say both on every die, pass or fail, which is the geometry the
    die labels are derived from. 12-epoch step-matched trial (2026-12-02):
    mean IoU 0.789 against the controls' 0.776 and 0.781, held-out
    macro-F1 0.861 against 0.866 and 0.860; 60 epochs: 0.8275 against
    v13's 0.819 (docs/model.md, "Region planes").

    BCE is averaged over on-wafer pixels and planes; Dice is taken per
    plane over the batch and averaged over all planes, absent ones counting
    zero, as in ``dice_focal``. ``on_wafer`` is ``(N, 1, H, W)`` 0/1.
    """
    valid = on_wafer.to(logits.dtype)
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none") * valid
    bce = bce.sum() / (valid.sum() * logits.shape[1]).clamp_min(1.0)
    prob = logits.sigmoid() * valid
    dims = (0, 2, 3)
    true_sum = (target * valid).sum(dims)
    score = 2.0 * (prob * target).sum(dims) / (prob.sum(dims) + true_sum).clamp_min(eps)
    dice = ((1.0 - score) * (true_sum > 0)).mean()
    return bce + dice


class Losses(nn.Module):
    """Wafer BCE (all maps) + wafer CE (real maps) + Dice/Focal on die masks and region loss (maps with masks)."""

    def __init__(self, cfg: TrainConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.bce = nn.BCEWithLogitsLoss(reduction="none")

    def forward(
        self,
        mask_logits: torch.Tensor,
        wafer_logits: torch.Tensor,
        target: torch.Tensor,
        mask: torch.Tensor,
        has_mask: torch.Tensor,
        regions: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Return the total loss and its parts (for logging).

        ``mask_logits`` holds the maps with masks only, in batch order (what
        ``WaferNet.outputs(x, decode=has_mask)`` computes); every other
        argument covers the whole batch. ``regions`` is ``(region_logits,
        region_target, on_wafer)`` when the network has a region head, its
        logits again for the maps with masks only. Logits may come in
        bfloat16 (mixed-precision training); the losses are computed in float32.
        """
        wafer_logits = wafer_logits.float()
        weights = torch.where(has_mask, self.cfg.synth_wafer_weight, 1.0)
        wafer = (self.bce(wafer_logits, target).mean(1) * weights).sum() / weights.sum()
        total = wafer
        parts = {"wafer": wafer.item()}
        real = ~has_mask
        if self.cfg.real_ce_weight > 0 and bool(real.any()):
            ce = F.cross_entropy(wafer_logits[real], target[real].argmax(1))
            total = total + self.cfg.real_ce_weight * ce
            parts["ce"] = ce.item()
        if bool(has_mask.any()):
            seg = dice_focal(mask_logits.float(), mask[has_mask])
            total = total + self.cfg.mask_weight * seg
            parts["mask"] = seg.item()
            if regions is not None:
                logits, target_planes, on_wafer = regions
                reg = region_loss(logits.float(), target_planes[has_mask], on_wafer[has_mask])
                total = total + self.cfg.region_weight * reg
                parts["region"] = reg.item()
        return total, parts
