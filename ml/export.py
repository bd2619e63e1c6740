"""ONNX export of a trained checkpoint: main graph, MC-dropout head, model card.

Why two graphs: MC-dropout (BALD) only needs the wafer head's dropout, which
sits after the embedding. Re-running the U-Net per dropout sample would cost
``mc_samples`` full forwards; instead ``model.mc_head.onnx`` takes the
embedding and explicit keep-masks ``(S, N, D)`` and returns ``(S, N, 9)``
logits in one call. Explicit masks (drawn by serving with a seeded numpy RNG)
keep predictions reproducible, which ONNX's random Dropout would not.

The main graph (``model.onnx``) has dynamic batch and spatial axes, opset 17,
and returns ``mask_logits``, ``wafer_logits`` (dropout off) and ``embedding``.
After export the wafer temperature is fitted on the real calib split with the
ONNX graph itself, so the calibration matches what serving computes.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

import numpy as np
import structlog
import torch
from torch import nn

from ml.buckets import BUCKETS
from ml.serving import mc_head_path
from ml.training.model import WaferNet
from ml.training.train import load_checkpoint

log = structlog.get_logger(__name__)

OPSET: Final[int] = 17


class _McHead(nn.Module):
    """Wafer head with dropout made explicit: logits = (emb * keep / (1-p)) W^T + b."""

    def __init__(self, net: WaferNet) -> None:
        super().__init__()
        self.head = net.head
        self.scale = 1.0 / (1.0 - net.cfg.dropout)

    def forward(self, embedding: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        return self.head(embedding.unsqueeze(0) * keep * self.scale)


def export_onnx(net: WaferNet, out: Path) -> None:
    """Write ``out`` (main graph) and its MC-dropout head, both single-file ONNX."""
    net = net.eval()
    out.parent.mkdir(parents=True, exist_ok=True)
    x = torch.zeros(2, net.cfg.in_channels, 64, 64)
    torch.onnx.export(
        net,
        (x,),
        str(out),
        input_names=["input"],
        output_names=["mask_logits", "wafer_logits", "embedding"],
        dynamic_axes={
            "input": {0: "batch", 2: "height", 3: "width"},
            "mask_logits": {0: "batch", 2: "height", 3: "width"},
            "wafer_logits": {0: "batch"},
            "embedding": {0: "batch"},
        },
        opset_version=OPSET,
        dynamo=False,
    )
    d = net.cfg.embedding_dim
    torch.onnx.export(
        _McHead(net),
        (torch.zeros(2, d), torch.ones(3, 2, d)),
        str(mc_head_path(out)),
        input_names=["embedding", "keep"],
        output_names=["logits"],
        dynamic_axes={"embedding": {0: "batch"}, "keep": {0: "samples", 1: "batch"},
                      "logits": {0: "samples", 1: "batch"}},
        opset_version=OPSET,
        dynamo=False,
    )
    log.info("exported", path=str(out), bytes=out.stat().st_size)


def file_hash(path: Path) -> str:
    """First 8 hex digits of the file's SHA-256: ties a version string to the bytes."""
    return hashlib.sha256(path.read_bytes()).hexdigest()[:8]


def base_card(
    net: WaferNet, ck: dict[str, object], model_path: Path, history: Sequence[Mapping[str, object]] = ()
) -> dict[str, object]:
    """Model-card fields known right after export (calibration and metrics come later).

    ``history`` is the run's per-epoch record (``history.json``). Why it is
    needed: the checkpoint's state is a snapshot from the epoch it was saved
    in, so it knows the best epoch but not how many epochs ran after it.
    """
    state = ck.get("state", {})
    short = {"mobilenet_v2": "mnv2", "tu-mobilenetv3_small_100": "mnv3s"}.get(
        net.cfg.encoder, net.cfg.encoder
    )
    date = datetime.now(UTC).strftime("%Y.%m.%d")
    return {
        "version": f"unet-{short}-{date}-{file_hash(model_path)}",
        "created_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "files": {"model": model_path.name, "mc_head": mc_head_path(model_path).name},
        "opset": OPSET,
        "buckets": list(BUCKETS),
        "in_channels": net.cfg.in_channels,
        "dropout": net.cfg.dropout,
        "temperature": 1.0,
        "thresholds": {},
        "train_config": ck.get("config"),
        "training": {
            "epochs_run": len(history) or None,
            "elapsed_s": history[-1]["elapsed_s"] if history else None,
            "best_epoch": state.get("epoch") if isinstance(state, dict) else None,
            "best_calib_macro_f1": state.get("best_f1") if isinstance(state, dict) else None,
        },
    }


def export_checkpoint(checkpoint: Path, out_dir: Path) -> Path:
    """Export a checkpoint to ``out_dir/model.onnx`` and write its initial model card."""
    net, ck = load_checkpoint(checkpoint)
    model_path = out_dir / "model.onnx"
    export_onnx(net, model_path)
    history_path = checkpoint.parent / "history.json"
    history = json.loads(history_path.read_text()) if history_path.exists() else ()
    card = base_card(net, ck, model_path, history)
    (out_dir / "model_card.json").write_text(json.dumps(card, indent=2))
    return model_path


def parity(net: WaferNet, model_path: Path, x: np.ndarray) -> float:
    """Max absolute difference between torch and onnxruntime outputs on ``x``."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        ref = [t.numpy() for t in net.eval()(torch.from_numpy(x))]
    got = sess.run(None, {"input": x})
    return float(max(np.abs(a - b).max() for a, b in zip(ref, got, strict=True)))
