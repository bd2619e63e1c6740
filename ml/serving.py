"""Serving: wafer maps in, calibrated pattern predictions out. onnxruntime + numpy only.

Why no torch here: the stream consumers run this for every wafer-test
completion; a 750 MB import and its start-up time buy nothing at inference.
``tests/ml`` checks in a subprocess that importing this module leaves torch
out of ``sys.modules``.

A model is ``model.onnx`` plus ``model_card.json`` (temperature, logit
offsets, version, thresholds, buckets, test-time views) and, for MC-dropout,
``model.mc_head.onnx`` beside it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import numpy as np
import onnxruntime as ort

from ml.buckets import BUCKETS, IN_CHANNELS, encode, from_bucket, place, to_bucket
from ml.metrics import sigmoid, softmax
from ml.taxonomy import DEFECT_PATTERNS, PATTERNS
from ml.tta import Forward, with_views

MODELS_DIR: Final[Path] = Path(__file__).resolve().parent / "models"
DEFAULT_MODEL_PATH: Final[Path] = MODELS_DIR / "model.onnx"
MC_HEAD_SUFFIX: Final[str] = ".mc_head.onnx"

#: Batch size per onnxruntime call; 8 is where per-map latency flattens at 64 px.
BATCH_SIZE: Final[int] = 8
#: Seed of the MC-dropout masks, so BALD scores are reproducible.
MC_SEED: Final[int] = 0


@dataclass(frozen=True)
class WaferPrediction:
    """Everything the pipeline needs to know about one wafer."""

    label: str  # top-1 wafer label among PATTERNS
    pattern_probs: dict[str, float]  # calibrated probability per PATTERNS name
    patterns: tuple[str, ...]  # defect patterns judged present (multi-label), may be empty
    die_labels: np.ndarray  # uint8 (rows, cols) on the original grid; nonzero only where dies == 2
    die_confidence: np.ndarray  # float32 (rows, cols) max class probability per die
    mean_entropy: float  # mean pixel entropy over on-wafer dies
    margin: float  # top1 - top2 wafer probability
    embedding: np.ndarray  # float32 (D,)
    bald: float | None  # MC-dropout mutual information, when requested


@dataclass(frozen=True)
class RawOutput:
    """Uncalibrated network outputs for a list of maps, in input order."""

    wafer_logits: np.ndarray  # (N, 9)
    die_probs: list[np.ndarray]  # per map (9, rows, cols) softmax on the die grid
    embeddings: np.ndarray  # (N, D)


def mc_head_path(model_path: Path) -> Path:
    """Path of the MC-dropout head graph beside ``model.onnx``."""
    return model_path.with_name(model_path.stem + MC_HEAD_SUFFIX)


def input_channels(session: ort.InferenceSession) -> int:
    """Input planes an ONNX wafer graph reads: the one static dimension of its input."""
    return int(session.get_inputs()[0].shape[1])


def _binary_entropy(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-7, 1 - 1e-7)
    return -(p * np.log(p) + (1 - p) * np.log(1 - p))


def run_bucketed(
    maps: Sequence[np.ndarray],
    forward: Forward,
    buckets: Sequence[int] = BUCKETS,
    batch_size: int = BATCH_SIZE,
    channels: int = IN_CHANNELS,
) -> RawOutput:
    """Group maps by bucket, run ``forward`` per batch, map outputs back to each die grid.

    Shared by serving (onnxruntime) and training validation (torch), so the
    validation numbers describe exactly what serving computes. ``channels``
    is how many input planes the model reads (``ml.buckets.encode``).
    """
    n = len(maps)
    logits = np.zeros((n, len(PATTERNS)), dtype=np.float32)
    emb: np.ndarray | None = None
    probs: list[np.ndarray] = [np.zeros(0)] * n
    placements = [place(np.asarray(m).shape, buckets) for m in maps]
    groups: dict[int, list[int]] = {}
    for i, p in enumerate(placements):
        groups.setdefault(p.bucket, []).append(i)
    for idx in groups.values():
        for j in range(0, len(idx), batch_size):
            chunk = idx[j : j + batch_size]
            x = np.stack([to_bucket(encode(maps[i], channels), placements[i]) for i in chunk])
            mask_logits, wafer_logits, embedding = forward(x)
            if emb is None:
                emb = np.zeros((n, embedding.shape[1]), dtype=np.float32)
            logits[chunk] = wafer_logits
            emb[chunk] = embedding
            pr = softmax(mask_logits, axis=1)
            for row, i in enumerate(chunk):
                probs[i] = from_bucket(pr[row], placements[i])
    return RawOutput(logits, probs, emb if emb is not None else np.zeros((0, 0), np.float32))


def die_labels_from_probs(dies: np.ndarray, die_probs: np.ndarray) -> np.ndarray:
    """Pattern code per die: every failing die gets its most likely pattern, others 0."""
    codes = (die_probs[1:].argmax(0) + 1).astype(np.uint8)
    return np.where(dies == 2, codes, 0).astype(np.uint8)


class WaferModel:
    """A loaded ONNX wafer model with its model card."""

    def __init__(
        self,
        session: ort.InferenceSession,
        mc_head: ort.InferenceSession | None,
        card: dict[str, object],
        tta_views: int | None = None,
    ) -> None:
        self.session = session
        self.mc_head = mc_head
        self.card = card
        self.version: str = str(card["version"])
        self.channels: int = input_channels(session)
        self.temperature: float = float(card.get("temperature", 1.0))  # type: ignore[arg-type]
        self.buckets: tuple[int, ...] = tuple(card.get("buckets", BUCKETS))  # type: ignore[arg-type]
        #: Symmetric views averaged per map (``ml.tta``); 1 = the map as it is.
        #: ``tta_views`` overrides the card's (the ship step compares counts).
        self.tta_views: int = tta_views or int(card.get("tta_views", 1))  # type: ignore[call-overload]
        # Built once: a bad count in a card fails at load, not at the first wafer.
        self.forward: Forward = with_views(self._graph, self.tta_views)
        offsets = card.get("logit_offsets") or {}
        self.logit_offsets = np.array(
            [float(offsets.get(name, 0.0)) for name in PATTERNS], dtype=np.float32  # type: ignore[union-attr]
        )
        thr = card.get("thresholds") or {}
        self.thresholds = np.array(
            [float(thr.get(name, 0.5)) for name in PATTERNS]  # type: ignore[union-attr]
        )

    @classmethod
    def load(
        cls, path: str | Path = DEFAULT_MODEL_PATH, intra_op_threads: int = 1, tta_views: int | None = None
    ) -> WaferModel:
        """Load ``path`` (the .onnx file) and the model card beside it.

        One intra-op thread by default: at these input sizes extra threads
        slow a call down; scale with processes/partitions instead.
        ``tta_views`` replaces the card's test-time view count.
        """
        path = Path(path)
        card = json.loads((path.parent / "model_card.json").read_text())
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = intra_op_threads
        opts.inter_op_num_threads = 1
        providers = ["CPUExecutionProvider"]
        session = ort.InferenceSession(str(path), opts, providers=providers)
        mc_path = mc_head_path(path)
        mc = ort.InferenceSession(str(mc_path), opts, providers=providers) if mc_path.exists() else None
        return cls(session, mc, card, tta_views)

    def _graph(self, x: np.ndarray) -> Sequence[np.ndarray]:
        """The main graph over one bucketed batch; ``forward`` averages it over the views."""
        return self.session.run(None, {"input": x})  # type: ignore[no-any-return]

    def raw(self, maps: Sequence[np.ndarray], batch_size: int = BATCH_SIZE) -> RawOutput:
        """Run ``forward`` over ``maps`` (see ``run_bucketed``)."""
        return run_bucketed(maps, self.forward, self.buckets, batch_size, self.channels)

    def bald(self, embeddings: np.ndarray, samples: int) -> np.ndarray:
        """MC-dropout mutual information per wafer (summed over the 9 binary outputs)."""
        if self.mc_head is None:
            raise RuntimeError(f"model {self.version} has no MC-dropout head")
        rng = np.random.default_rng(MC_SEED)
        p_drop = float(self.card.get("dropout", 0.0))  # type: ignore[arg-type]
        keep = (rng.random((samples, *embeddings.shape)) >= p_drop).astype(np.float32)
        (logits,) = self.mc_head.run(None, {"embedding": embeddings, "keep": keep})
        p = sigmoid((logits + self.logit_offsets) / self.temperature)  # (S, N, 9)
        mi = _binary_entropy(p.mean(0)) - _binary_entropy(p).mean(0)
        return mi.sum(1)

    def wafer_probs(self, wafer_logits: np.ndarray) -> np.ndarray:
        """Calibrated per-pattern probabilities: offset, temperature-scaled sigmoid."""
        return sigmoid((wafer_logits + self.logit_offsets) / self.temperature)

    def predict(self, maps: Sequence[np.ndarray], mc_samples: int = 0) -> list[WaferPrediction]:
        """Predict patterns and die labels for uint8 die grids (0 none, 1 pass, 2 fail)."""
        maps = [np.asarray(m, dtype=np.uint8) for m in maps]
        if not maps:
            return []
        raw = self.raw(maps)
        probs = self.wafer_probs(raw.wafer_logits)
        bald = self.bald(raw.embeddings, mc_samples) if mc_samples > 0 else None
        out = []
        for i, dies in enumerate(maps):
            p = probs[i]
            order = np.argsort(-p)
            label = PATTERNS[int(order[0])]
            present = {PATTERNS[k] for k in range(1, len(PATTERNS)) if p[k] >= self.thresholds[k]}
            if label != "none":
                present.add(label)
            dp = raw.die_probs[i]
            fail = dies == 2
            die_labels = die_labels_from_probs(dies, dp)
            defect_conf = dp[1:].max(0) / np.maximum(dp[1:].sum(0), 1e-12)
            die_conf = np.where(fail, defect_conf, dp.max(0)).astype(np.float32)
            ent = -(dp * np.log(np.clip(dp, 1e-12, 1.0))).sum(0)
            on = dies > 0
            out.append(
                WaferPrediction(
                    label=label,
                    pattern_probs={name: float(p[k]) for k, name in enumerate(PATTERNS)},
                    patterns=tuple(name for name in DEFECT_PATTERNS if name in present),
                    die_labels=die_labels,
                    die_confidence=die_conf,
                    mean_entropy=float(ent[on].mean()) if on.any() else 0.0,
                    margin=float(p[order[0]] - p[order[1]]),
                    embedding=raw.embeddings[i].astype(np.float32),
                    bald=None if bald is None else float(bald[i]),
                )
            )
        return out
