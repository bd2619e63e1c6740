"""Training loop: real maps (wafer labels) + synthetic maps (die masks), resumable.

Why this mix: real WM-811K maps carry only wafer-level labels and are what the
model is judged on; synthetic maps carry die-level masks. Each epoch draws a
class-balanced sample of real maps (inverse-frequency^power sampling, because
Near-full has 43 maps and none 10k) plus freshly generated synthetic maps.
Loss = BCE on wafer logits for all maps + softmax cross-entropy for real
maps + (Dice + Focal) on die masks for synthetic maps only (+ the region
loss on their pattern regions, with ``region_head``). AdamW with
warm-up and cosine decay; the weights that are validated, selected and
shipped are an exponential moving average of the trained ones. Early
stopping and model selection on real calib-split macro-F1, both only once
the rate has decayed (``early_stop_from``).

Why selection waits too: on the 1,803-map calib split four maps are
Near-full and sixteen Donut, so one map moves macro-F1 by up to 0.03. Run v7
peaked at epoch 22 of a planned ~44, at a high rate, on Near-full going
3/4 -> 4/4 while every larger class was flat; it shipped that epoch and
early stopping, counting from it, ended the run before the rate had
decayed. Only the low-rate tail's models compete now.

Why cross-entropy on top of BCE for real maps: a real WM-811K map carries
exactly one label and is judged by its top-1 label, which per-class BCE only
optimises indirectly (each sigmoid on its own); the softmax term ranks the
true class above the others. BCE stays, because serving reads the sigmoid
outputs as multi-label pattern probabilities and synthetic maps are
multi-label.

Why a weight average: the real data is small and its labels are noisy
(Loc/Scratch/Edge-Loc are confused by annotators too), so single weights
jump between epochs (v3's calib macro-F1 moved by +-0.02 epoch to epoch);
an EMA over the last few hundred steps is a steadier model at no training
cost.

Why the schedule runs on *progress*, not on steps alone: the default run must
fit the 45-minute CPU target whatever the machine's load, and a run cut off
by its time budget halfway down a step-based cosine never reaches the low
learning rates where the model settles (the v2 model stopped at 13 of 18
epochs with the rate still at a fifth of its peak). Progress is the larger of
the step fraction and the time-budget fraction, so a slow machine gets fewer
steps but always a complete schedule.
"""

from __future__ import annotations

import json
import math
import random
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import structlog
import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm import tqdm

from ml.data import WaferSet
from ml.metrics import MaskOverlap, confusion, macro_f1, per_class
from ml.serving import die_labels_from_probs, run_bucketed
from ml.synth import SYNTH_TRAIN_SEED, SynthMap, generate_many, validation_maps, wafer_target
from ml.taxonomy import DEFECT_PATTERNS, PATTERNS
from ml.training.batches import Sample, build_augment, iter_batches
from ml.training.losses import Losses
from ml.training.model import ModelConfig, WaferNet
from ml.training.precision import forward_autocast, resolve_precision

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    """Training hyper-parameters (recorded in checkpoints and the model card)."""

    #: More than fit the time budget on a slow 2-core machine (v10: 36
    #: there): the budget ends the schedule, a faster machine runs them all
    #: (v13: 60 in 40 minutes).
    epochs: int = 60
    #: The real maps per epoch stay at 6,500 whatever is added: v11 traded
    #: 1,000 of them for synthetic maps and called 30 more clean wafers Scratch.
    real_per_epoch: int = 6500
    #: The die masks learn from synthetic maps only, so more of them bought
    #: IoU up to here (v13: 4,000 with 60 epochs, 0.823; v12: 2,500 with 42,
    #: 0.808). Beyond it they did not (v14: 6,000, 0.824), and the wafer
    #: head called 83 clean real wafers Scratch (v13: 15); a lower
    #: ``synth_wafer_weight`` did not undo that (v15, docs/model.md).
    synth_per_epoch: int = 4000
    #: Probabilities of synthetic training maps with 0-4 patterns. The
    #: evaluation maps keep ``N_PATTERNS_P`` (30 % of them mixtures); training
    #: sees 55 % mixtures, because mixtures hold most of the IoU gap (v12:
    #: 0.808, against 0.803 for the same 42 epochs at the evaluation share).
    synth_n_patterns_p: tuple[float, ...] = (0.10, 0.35, 0.30, 0.15, 0.10)
    batch_size: int = 32
    lr: float = 2e-3
    weight_decay: float = 1e-4
    mask_weight: float = 1.0
    #: Weight of ``region_loss`` (used when ``model.region_head``).
    region_weight: float = 1.0
    synth_wafer_weight: float = 0.3
    real_ce_weight: float = 1.0
    #: Per-step decay of the weight average (horizon ~1 / (1 - decay) steps).
    ema_decay: float = 0.998
    balance_power: float = 0.7
    patience: int = 6
    #: Early stopping waits until this much of the schedule has run: before
    #: the rate has decayed, a plateau is the high rate, not convergence (run
    #: v6 stopped at epoch 44 of 80 on one and scored below v3).
    early_stop_from: float = 0.75
    max_minutes: float = 42.0
    warmup: float = 0.1
    seed: int = 0
    synth_val: int = 300
    #: Before the decayed tail, validate every this many epochs; in the tail,
    #: where epochs compete for ``best.pt``, every epoch. Why: validation
    #: (1,803 calib maps + ``synth_val`` synthetic maps) took 6.5 s, a sixth
    #: of a mixed-precision epoch, and before the tail it only draws the curve.
    validate_every: int = 5
    #: ``auto``, ``bf16`` or ``fp32`` (``ml.training.precision``); ``train``
    #: records the resolved one in the checkpoint's config.
    precision: str = "auto"
    model: ModelConfig = field(default_factory=ModelConfig)

    def to_dict(self) -> dict[str, object]:
        """JSON-friendly form."""
        d = asdict(self)
        d["model"] = self.model.to_dict()
        return d


def seed_everything(seed: int) -> None:
    """Fix every RNG training touches."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def real_samples(ws: WaferSet) -> list[Sample]:
    """Wrap real maps as samples with one-hot wafer targets and no mask."""
    eye = np.eye(len(PATTERNS), dtype=np.float32)
    return [Sample(m, eye[k], None) for m, k in zip(ws.maps, ws.labels, strict=True)]


def synth_samples(maps: list[SynthMap]) -> list[Sample]:
    """Wrap synthetic maps as samples with multi-hot targets, die masks and region bits."""
    return [Sample(m.dies, wafer_target(m.patterns), m.die_labels, m.regions) for m in maps]


def lr_factor(progress: float, warmup: float) -> float:
    """Learning-rate multiplier at ``progress`` in [0, 1]: linear warm-up, then cosine to 0."""
    if progress < warmup:
        return 0.04 + 0.96 * progress / warmup
    t = min(1.0, (progress - warmup) / (1.0 - warmup))
    return 0.5 * (1.0 + math.cos(math.pi * t))


def should_stop(bad_epochs: int, progress: float, cfg: TrainConfig) -> bool:
    """Early stopping: patience spent, and far enough into the schedule for the rate to have decayed."""
    return bad_epochs >= cfg.patience and progress >= cfg.early_stop_from


def competes(epoch: int, progress: float, cfg: TrainConfig) -> bool:
    """Whether epoch ``epoch`` (0-based) may become ``best.pt``: the decayed tail, or the last epoch.

    The last epoch always competes, so a run too short to reach the tail still ships.
    """
    return progress >= cfg.early_stop_from or epoch + 1 >= cfg.epochs or progress >= 1.0


def should_validate(epoch: int, progress: float, cfg: TrainConfig) -> bool:
    """Whether epoch ``epoch`` (0-based) is validated: every competing epoch, and every ``validate_every``-th."""
    return competes(epoch, progress, cfg) or (epoch + 1) % cfg.validate_every == 0


def balanced_draw(labels: np.ndarray, n: int, power: float, rng: np.random.Generator) -> np.ndarray:
    """Draw ``n`` indices with class weight proportional to count**-power."""
    # Indexed by the labels drawn from, so every count here is at least 1.
    w = np.bincount(labels, minlength=len(PATTERNS)).astype(float)[labels] ** (-power)
    return rng.choice(len(labels), size=n, replace=True, p=w / w.sum())


def validate(
    net: WaferNet, calib: WaferSet, synth_val: list[SynthMap], device: torch.device
) -> dict[str, object]:
    """Real calib macro-F1/per-class recall and synthetic die-level mean IoU.

    Runs through ``ml.serving.run_bucketed`` so validation computes exactly
    what serving will (bucketing, die-grid mapping, die-label rule).
    """
    net.eval()

    def forward(x: np.ndarray) -> list[np.ndarray]:
        with torch.no_grad():
            return [t.cpu().numpy() for t in net(torch.from_numpy(x).to(device))]

    channels = net.cfg.in_channels
    logits = run_bucketed(calib.maps, forward, batch_size=64, channels=channels).wafer_logits
    cm = confusion(calib.labels, logits.argmax(1))
    synth = run_bucketed([m.dies for m in synth_val], forward, batch_size=64, channels=channels)
    masks = [die_labels_from_probs(m.dies, p) for m, p in zip(synth_val, synth.die_probs)]
    iou = MaskOverlap.of([m.die_labels for m in synth_val], masks).iou()
    return {
        "macro_f1": macro_f1(cm),
        "recall": {k: round(v["recall"], 3) for k, v in per_class(cm).items()},
        "mean_iou": float(np.nanmean(iou[1:])),
        "iou": {name: round(float(iou[k + 1]), 3) for k, name in enumerate(DEFECT_PATTERNS)},
    }


def train(
    cfg: TrainConfig, fit: WaferSet, calib: WaferSet, out_dir: Path, resume: bool = False
) -> Path:
    """Train, checkpointing ``last.pt`` every epoch and ``best.pt`` on calib macro-F1.

    ``best.pt`` is the best epoch of the decayed part of the schedule
    (progress >= ``early_stop_from``, or the last epoch); early stopping
    counts from it.

    Returns the path of the best checkpoint. With ``resume``, continues from
    ``out_dir/last.pt`` (trained and averaged weights, optimiser, schedule,
    RNG and history, and, unless ``cfg`` asks for one, its precision). A
    checkpoint's ``model`` is the weight average (what is validated and
    exported); ``last.pt`` also keeps the trained weights.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    requested = cfg.precision
    cfg = replace(cfg, precision=resolve_precision(requested, device))
    seed_everything(cfg.seed)
    # channels_last: oneDNN's convolutions run about 1.4x faster per step on CPU.
    net = WaferNet(cfg.model).to(device, memory_format=torch.channels_last)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    ema = AveragedModel(net, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema_decay), use_buffers=True)
    # +8 steps per epoch because bucket grouping leaves up to one partial batch per bucket.
    steps_per_epoch = (cfg.real_per_epoch + cfg.synth_per_epoch + cfg.batch_size - 1) // cfg.batch_size
    total_steps = cfg.epochs * (steps_per_epoch + 8)
    budget_s = cfg.max_minutes * 60.0
    losses = Losses(cfg).to(device)
    aug = build_augment()
    synth_val = validation_maps(cfg.synth_val)
    state: dict[str, object] = {"epoch": 0, "step": 0, "best_f1": -1.0,
                                "bad_epochs": 0, "history": [], "elapsed_s": 0.0}
    last, best = out_dir / "last.pt", out_dir / "best.pt"
    if resume and last.exists():
        ck = torch.load(last, map_location=device, weights_only=False)
        net.load_state_dict(ck["trained"])
        ema.module.load_state_dict(ck["model"])
        ema.n_averaged.fill_(int(ck["ema_updates"]))
        opt.load_state_dict(ck["optim"])
        state = ck["state"]
        if requested == "auto":  # the precision the run started in; float32 before the option
            cfg = replace(cfg, precision=str(ck["config"].get("precision", "fp32")))
        log.info("resumed", epoch=state["epoch"], best_f1=state["best_f1"])
    log.info("precision", precision=cfg.precision, device=device.type)
    start = time.monotonic() - float(state["elapsed_s"])  # type: ignore[arg-type]
    step = int(state["step"])  # type: ignore[call-overload]

    def progress() -> float:
        return max(step / total_steps, (time.monotonic() - start) / budget_s)

    lr = cfg.lr * lr_factor(progress(), cfg.warmup)

    while int(state["epoch"]) < cfg.epochs and progress() < 1.0:  # type: ignore[call-overload]
        epoch = int(state["epoch"])  # type: ignore[call-overload]
        rng = np.random.default_rng([cfg.seed, epoch])
        torch.manual_seed(cfg.seed * 1000 + epoch)
        aug.set_random_seed(cfg.seed * 1000 + epoch)
        idx = balanced_draw(fit.labels, cfg.real_per_epoch, cfg.balance_power, rng)
        samples = real_samples(fit.subset(idx)) + synth_samples(
            generate_many(SYNTH_TRAIN_SEED, cfg.synth_per_epoch, start=epoch * cfg.synth_per_epoch,
                          n_patterns_p=cfg.synth_n_patterns_p)
        )
        net.train()
        run: dict[str, float] = {}
        bar = tqdm(
            iter_batches(samples, cfg.batch_size, rng, aug, cfg.model.in_channels),
            total=steps_per_epoch, desc=f"epoch {epoch + 1}/{cfg.epochs}", mininterval=10,
        )
        for n, batch in enumerate(bar, start=1):
            lr = cfg.lr * lr_factor(progress(), cfg.warmup)
            for group in opt.param_groups:
                group["lr"] = lr
            x = batch.x.to(device).contiguous(memory_format=torch.channels_last)
            has_mask = batch.has_mask.to(device)
            with forward_autocast(cfg.precision, device):
                out = net.outputs(x, decode=has_mask)
            regions = None
            if out.region_logits is not None:
                regions = (out.region_logits, batch.regions.to(device), x[:, :1])
            loss, parts = losses(
                out.mask_logits, out.wafer_logits, batch.target.to(device), batch.mask.to(device),
                has_mask, regions,
            )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            ema.update_parameters(net)
            step += 1
            for k, v in parts.items():
                run[k] = run.get(k, 0.0) + (v - run.get(k, 0.0)) / n
            bar.set_postfix({k: f"{v:.3f}" for k, v in run.items()} | {"lr": f"{lr:.2e}"}, refresh=False)
            if progress() >= 1.0:
                log.info("schedule_complete", step=step, elapsed_min=round((time.monotonic() - start) / 60, 1))
                break
        done = progress()
        tail = competes(epoch, done, cfg)
        metrics = validate(ema.module, calib, synth_val, device) if should_validate(epoch, done, cfg) else {}
        elapsed = time.monotonic() - start
        state["epoch"] = epoch + 1
        state["step"] = step
        state["elapsed_s"] = elapsed
        state["history"].append({"epoch": epoch + 1, "step": step, "lr": lr, "loss": run,  # type: ignore[union-attr]
                                 **metrics, "elapsed_s": round(elapsed, 1)})
        improved = tail and float(metrics["macro_f1"]) > float(state["best_f1"])  # type: ignore[arg-type]
        if improved:
            state["best_f1"] = metrics["macro_f1"]
            state["bad_epochs"] = 0
        else:
            state["bad_epochs"] = int(state["bad_epochs"]) + 1  # type: ignore[call-overload]
        log.info("epoch", epoch=epoch + 1, loss=run, elapsed_s=round(elapsed), **metrics)
        model_state = {k: v.contiguous() for k, v in ema.module.state_dict().items()}
        trained_state = {k: v.contiguous() for k, v in net.state_dict().items()}
        ck = {"model": model_state, "trained": trained_state, "ema_updates": int(ema.n_averaged),
              "optim": opt.state_dict(), "state": state, "config": cfg.to_dict()}
        torch.save(ck, last)
        if improved:
            torch.save({"model": model_state, "config": cfg.to_dict(), "state": state}, best)
        (out_dir / "history.json").write_text(json.dumps(state["history"], indent=1))
        if should_stop(int(state["bad_epochs"]), progress(), cfg):  # type: ignore[call-overload]
            log.info("early_stop", epoch=epoch + 1)
            break
    return best


def load_checkpoint(path: Path) -> tuple[WaferNet, dict[str, object]]:
    """Load a checkpoint's network (eval mode, CPU) and its stored config."""
    ck = torch.load(path, map_location="cpu", weights_only=False)
    cfg = ModelConfig.from_dict(ck["config"]["model"])
    net = WaferNet(cfg)
    net.load_state_dict(ck["model"])
    net.eval()
    return net, ck
