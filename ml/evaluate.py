"""Evaluation and calibration of an exported model (onnxruntime, no torch).

Why through the ONNX graph: the numbers in the model card must describe what
serving computes, including bucketing, temperature and die-grid mapping.

- ``calibrate``: fits per-class logit offsets (prior-shift correction for
  class-balanced training; kept only when cross-fitting shows they carry
  over to maps they were not fitted on) and then the wafer temperature on
  real maps the model did not train on (the calib split), and stores both in
  the model card.
- ``evaluate_real``: wafer-level accuracy, macro-F1, per-class
  precision/recall, 9x9 confusion matrix, ECE before/after temperature.
- ``evaluate_synthetic``: die-level IoU per pattern on generated maps from a
  seed stream training never used.
"""

from __future__ import annotations

import io
import json
import time
from pathlib import Path
from typing import Final

import numpy as np
import structlog
from PIL import Image, ImageDraw, ImageFont

from ml.data import WaferSet, stratified_split
from ml.metrics import (
    MaskOverlap,
    confusion,
    decision_macro_f1,
    expected_calibration_error,
    fit_logit_offsets,
    fit_temperature,
    macro_f1,
    per_class,
    sigmoid,
)
from ml.serving import WaferModel
from ml.synth import SYNTH_EVAL_SEED, SynthMap, evaluation_maps
from ml.taxonomy import DEFECT_PATTERNS, PATTERNS

log = structlog.get_logger(__name__)

#: Maps in the shipped synthetic evaluation. Why 2,000 and not the earlier
#: 500: the die-level mIoU of one model (v13) on disjoint 500-map blocks of
#: streams 2, 3 and 5 ranged from 0.780 to 0.827, so a 500-map figure could
#: pass or miss the 0.85 bar by sample luck; over 2,000 maps the blocks
#: average out (v13: 0.819 on stream 3, 0.802 on 2, 0.813 on 5), and the
#: evaluation still takes seconds.
SYNTH_EVAL_MAPS: Final[int] = 2000
CARD_JSON: Final[str] = "model_card.json"
CARD_MD: Final[str] = "model_card.md"


def _ece(probs: np.ndarray, labels: np.ndarray) -> float:
    """ECE of the top-1 label with probabilities normalised over the nine labels."""
    norm = probs / probs.sum(1, keepdims=True)
    top = norm.argmax(1)
    return expected_calibration_error(norm.max(1), (top == labels).astype(float))


#: Offset sets ``generalising_offsets`` chooses between, smallest first: the
#: ``none`` column alone, then every class (``None``).
OFFSET_SCOPES: Final[dict[str, tuple[int, ...] | None]] = {"none only": (PATTERNS.index("none"),), "all": None}


def cross_fitted_gain(logits: np.ndarray, labels: np.ndarray, classes: tuple[int, ...] | None) -> float:
    """Mean held-out macro-F1 gain of offsets over ``classes``, fitted on one stratified half."""
    half_a, half_b = stratified_split(labels, 0.5, seed=1)
    gains = []
    for fit, held in ((half_a, half_b), (half_b, half_a)):
        off = fit_logit_offsets(logits[fit], labels[fit], classes=classes)
        gains.append(decision_macro_f1(logits[held], labels[held], off)
                     - decision_macro_f1(logits[held], labels[held]))
    return float(np.mean(gains))


def generalising_offsets(logits: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, float, str]:
    """The offset set that gains most under cross-fitting, fitted on all maps; zeros if none gains.

    Why the check: offsets fitted on the ~1,800 calib maps always raise
    *calib* macro-F1 (by 0.04 on the v2 model), but a rare class has only a
    handful of maps there, and on an earlier model they lowered held-out
    macro-F1. Two-fold cross-fitting (fit on one stratified half, score on
    the other) estimates the gain on unseen maps.

    Why two scopes: with all nine columns or nothing, one re-calibration
    that did not generalise dropped the ``none`` offset too (v24 with two
    views: 76 clean wafers called Scratch, against 31 with offsets). The
    ``none`` column alone is the prior shift training's class balancing
    makes largest (59 % of real maps are clean); one parameter on ~1,800
    maps cannot chase a rare class. The scope with the higher positive gain
    wins, the smaller on a tie. Returns (offsets, cross-fitted gain, scope
    name or ``"dropped"``).
    """
    gains = {scope: cross_fitted_gain(logits, labels, classes) for scope, classes in OFFSET_SCOPES.items()}
    scope = max(gains, key=lambda k: gains[k])  # dicts keep order: the smaller scope wins ties
    if gains[scope] <= 0:
        return np.zeros(logits.shape[1]), gains[scope], "dropped"
    return fit_logit_offsets(logits, labels, classes=OFFSET_SCOPES[scope]), gains[scope], scope


def calibrate(model_path: Path, calib: WaferSet) -> float:
    """Fit logit offsets, then the temperature, on ``calib``; write both into the card.

    The temperature is fitted on the shifted logits, so the probabilities
    serving reports are calibrated for the decisions it makes. Returns the
    temperature.
    """
    model = WaferModel.load(model_path)
    logits = model.raw(calib.maps).wafer_logits
    offsets, gain, scope = generalising_offsets(logits, calib.labels)
    targets = np.eye(len(PATTERNS), dtype=np.float32)[calib.labels]
    t = fit_temperature(logits + offsets, targets)
    update_card(model_path.parent, {
        "temperature": t,
        "logit_offsets": {name: float(v) for name, v in zip(PATTERNS, offsets, strict=True)},
        "logit_offsets_cross_fitted_gain": gain,
        "logit_offsets_scope": scope,
        "calibration_maps": len(calib),
    })
    log.info("calibrated", temperature=round(t, 3), offsets=offsets.round(2).tolist(),
             cross_fitted_gain=round(gain, 4), scope=scope, maps=len(calib))
    return t


def evaluate_real(model_path: Path, ws: WaferSet, dataset: str) -> dict[str, object]:
    """Wafer-level metrics of the model on real labelled maps."""
    model = WaferModel.load(model_path)
    t0 = time.perf_counter()
    logits = model.raw(ws.maps).wafer_logits
    elapsed = time.perf_counter() - t0
    probs = model.wafer_probs(logits)
    pred = probs.argmax(1)
    cm = confusion(ws.labels, pred)
    stats = per_class(cm)
    return {
        "dataset": dataset,
        "maps": len(ws),
        "accuracy": float(np.trace(cm) / cm.sum()),
        "macro_f1": macro_f1(cm),
        "per_class": stats,
        "min_defect_recall": min(stats[n]["recall"] for n in DEFECT_PATTERNS if stats[n]["support"]),
        "confusion_matrix": cm.tolist(),
        "labels": list(PATTERNS),
        "temperature": model.temperature,
        "ece_uncalibrated": _ece(sigmoid(logits), ws.labels),
        "ece_calibrated": _ece(probs, ws.labels),
        "ms_per_map_1thread_batch8": 1000 * elapsed / max(1, len(ws)),
    }


def _named_iou(iou: np.ndarray) -> dict[str, float | None]:
    """Per defect pattern IoU; None where no map had the pattern (JSON has no NaN)."""
    return {name: None if np.isnan(iou[k + 1]) else float(iou[k + 1])
            for k, name in enumerate(DEFECT_PATTERNS)}


def _mean_iou(iou: np.ndarray) -> float | None:
    """Mean over the defect patterns that occurred; None if none did."""
    defect = iou[1:]
    return None if np.isnan(defect).all() else float(np.nanmean(defect))


def die_masks(model: WaferModel, maps: list[SynthMap]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """True and predicted die codes of ``maps``, as ``MaskOverlap.of`` takes them."""
    return [m.die_labels for m in maps], [p.die_labels for p in model.predict([m.dies for m in maps])]


def synthetic_mean_iou(model: WaferModel, maps: list[SynthMap]) -> float | None:
    """Die-level mean IoU of ``model`` on ``maps`` (the headline figure of ``evaluate_synthetic``)."""
    return _mean_iou(MaskOverlap.of(*die_masks(model, maps)).iou())


def evaluate_synthetic(model_path: Path, n: int) -> dict[str, object]:
    """Die-level IoU per pattern on ``n`` synthetic maps (seed stream SYNTH_EVAL_SEED).

    Besides the headline IoU it breaks the result down the ways that have
    told the fixes apart: single-pattern maps against mixtures, the die
    confusion matrix, per pattern how many wafers it was missed on outright
    (per-map IoU under 0.1), and the IoU outside the dies where two pattern
    regions overlap (``SynthMap.overlap``), with how those dies were labelled.
    Why the last: there the true code is a precedence convention the map
    does not show (v13: 1.3 % of failing dies, Scratch right on 4 % of its;
    mean IoU 0.842 without them, 0.819 with), so a model gains mostly
    elsewhere; the headline IoU, the bar, still counts them.
    """
    maps = evaluation_maps(n)
    truth, masks = die_masks(WaferModel.load(model_path), maps)
    report: dict[str, object] = {"maps": n, "seed": SYNTH_EVAL_SEED}
    overlap = MaskOverlap.of(truth, masks)
    iou = overlap.iou()
    report.update(iou=_named_iou(iou), mean_iou=_mean_iou(iou))
    for part, keep in (("single", lambda k: k == 1), ("mixture", lambda k: k > 1)):
        idx = [i for i, m in enumerate(maps) if keep(len(m.patterns))]
        sub = overlap.iou(idx)
        report.update({f"maps_{part}": len(idx), f"iou_{part}": _named_iou(sub),
                       f"mean_iou_{part}": _mean_iou(sub)})
    present, missed = overlap.missed()
    report["missed"] = {name: {"maps": int(present[k + 1]), "missed": int(missed[k + 1])}
                        for k, name in enumerate(DEFECT_PATTERNS)}
    report["die_confusion"] = overlap.die_confusion().tolist()
    report.update(overlap_breakdown(overlap, maps, truth, masks))
    return report


def overlap_breakdown(
    whole: MaskOverlap, maps: list[SynthMap], truth: list[np.ndarray], masks: list[np.ndarray]
) -> dict[str, object]:
    """IoU with overlap dies left out, and per true code how many overlap dies were labelled right.

    ``truth`` and ``masks`` are per-map die codes (non-zero only on failing
    dies) and ``whole`` their table over all dies. Every die is inside or
    outside the overlaps, so the outside table is ``whole`` minus the inside
    one in every cell an IoU reads (only background-background differs).
    A code appears in ``overlap`` only if some overlap die has it.
    """
    inside = MaskOverlap.of([np.where(m.overlap, t, 0) for m, t in zip(maps, truth, strict=True)],
                            [np.where(m.overlap, p, 0) for m, p in zip(maps, masks, strict=True)])
    iou = MaskOverlap(whole.per_map - inside.per_map).iou()
    dies, right = inside.true_count.sum(0), inside.inter.sum(0)
    return {
        "overlap_dies": int(dies[1:].sum()),
        "overlap": {name: {"dies": int(dies[k + 1]), "correct": int(right[k + 1])}
                    for k, name in enumerate(DEFECT_PATTERNS) if dies[k + 1] > 0},
        "iou_outside_overlaps": _named_iou(iou),
        "mean_iou_outside_overlaps": _mean_iou(iou),
    }


def confusion_png(cm: np.ndarray, labels: list[str] | tuple[str, ...]) -> bytes:
    """Row-normalised confusion matrix as PNG (counts printed, colour = row share)."""
    cell, left, top = 46, 80, 80
    n = len(labels)
    img = Image.new("RGB", (left + n * cell + 10, top + n * cell + 30), "white")
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default()
    rows = cm.sum(1, keepdims=True).astype(float)
    share = np.divide(cm, rows, out=np.zeros(cm.shape), where=rows > 0)
    for i in range(n):
        draw.text((4, top + i * cell + cell // 2 - 6), labels[i][:11], fill="black", font=font)
        draw.text((left + i * cell + 2, top - 16 - (i % 2) * 14), labels[i][:8], fill="black",
                  font=font)
        for j in range(n):
            v = int(255 - 200 * share[i, j])
            x0, y0 = left + j * cell, top + i * cell
            draw.rectangle((x0, y0, x0 + cell - 1, y0 + cell - 1), fill=(v, v, 255))
            draw.text((x0 + 4, y0 + cell // 2 - 6), str(int(cm[i, j])),
                      fill="white" if share[i, j] > 0.6 else "black", font=font)
    draw.text((left, top + n * cell + 8), "rows: true label, columns: predicted", fill="black",
              font=font)
    draw.text((4, 4), "Confusion matrix", fill="black", font=font)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def update_card(model_dir: Path, fields: dict[str, object]) -> dict[str, object]:
    """Merge ``fields`` into model_card.json and re-render model_card.md."""
    path = model_dir / CARD_JSON
    card = json.loads(path.read_text()) if path.exists() else {}
    card.update(fields)
    path.write_text(json.dumps(card, indent=2) + "\n")
    (model_dir / CARD_MD).write_text(card_markdown(card))
    return card


def format_score(v: object) -> str:
    """A score with three decimals, or "-" where it is undefined (None)."""
    return "-" if v is None else f"{v:.3f}"


def _synthetic_markdown(synth: dict[str, object]) -> list[str]:
    """IoU table (all / single-pattern / mixture maps, wafers missed, outside overlaps) and die confusion."""
    lines = [f"## Synthetic die-level IoU ({synth['maps']} maps, seed {synth['seed']})", ""]
    iou = synth["iou"]
    assert isinstance(iou, dict)
    single, mixed, missed = (synth.get(k) or {} for k in ("iou_single", "iou_mixture", "missed"))
    assert isinstance(single, dict) and isinstance(mixed, dict) and isinstance(missed, dict)
    outside, in_overlap = (synth.get(k) or {} for k in ("iou_outside_overlaps", "overlap"))
    assert isinstance(outside, dict) and isinstance(in_overlap, dict)
    lines += [f"| pattern | IoU | single-pattern maps ({synth.get('maps_single', '-')}) | "
              f"mixtures ({synth.get('maps_mixture', '-')}) | wafers missed (IoU < 0.1) | "
              f"outside overlaps | overlap dies labelled right |",
              "|---|---:|---:|---:|---:|---:|---:|"]
    for name, v in iou.items():
        m, o = missed.get(name), in_overlap.get(name)
        miss = f"{m['missed']} / {m['maps']}" if m else "-"
        right = f"{o['correct']} / {o['dies']}" if o else "-"
        lines.append(f"| {name} | {format_score(v)} | {format_score(single.get(name))} | "
                     f"{format_score(mixed.get(name))} | {miss} | {format_score(outside.get(name))} | {right} |")
    lines += [f"| **mean** | **{format_score(synth['mean_iou'])}** | {format_score(synth.get('mean_iou_single'))} | "
              f"{format_score(synth.get('mean_iou_mixture'))} | | "
              f"{format_score(synth.get('mean_iou_outside_overlaps'))} | {synth.get('overlap_dies', '-')} dies |", ""]
    if "overlap_dies" in synth:
        lines += ["Overlaps: failing dies inside two or more pattern regions, where the true code",
                  "follows the generator's precedence rule rather than anything the map shows.", ""]
    cm = synth.get("die_confusion")
    if isinstance(cm, list):
        lines += ["Failing dies, rows true pattern, columns predicted:", "",
                  "| true, predicted: | " + " | ".join(DEFECT_PATTERNS) + " |",
                  "|---|" + "---:|" * len(DEFECT_PATTERNS)]
        lines += [f"| {name} | " + " | ".join(str(c) for c in cm[k + 1][1:]) + " |"
                  for k, name in enumerate(DEFECT_PATTERNS)]
        lines.append("")
    return lines


def card_markdown(card: dict[str, object]) -> str:
    """Human-readable model card from its JSON form."""
    lines = [f"# Model card: {card.get('version')}", ""]
    lines += [
        "U-Net (segmentation-models-pytorch) over die grids with a die-mask head, a",
        "wafer-level multi-label head over the nine WM-811K labels and an embedding.",
        "Trained on real WM-811K maps (wafer labels) and synthetic maps (die masks).",
        "",
        f"- Files: `{json.dumps(card.get('files'))}`",
        f"- Buckets: {card.get('buckets')}; temperature {card.get('temperature')}; "
        f"test-time views {card.get('tta_views', 1)} (`ml/tta.py`)",
        f"- Logit offsets (prior-shift correction, fitted on the calib split, kept only if "
        f"2-fold cross-fitting gains; scope {card.get('logit_offsets_scope', 'all')}, "
        f"gain {card.get('logit_offsets_cross_fitted_gain')}): "
        f"`{json.dumps(card.get('logit_offsets', {}))}`",
        f"- Training: `{json.dumps(card.get('training'))}`",
        f"- Reproduce: `{card.get('reproduce', 'see docs/model.md')}`",
        "",
    ]
    real = card.get("eval_real")
    if isinstance(real, dict):
        lines += [
            f"## Real maps: {real['dataset']} ({real['maps']} maps, never trained on)",
            "",
            f"Accuracy {real['accuracy']:.4f}, macro-F1 {real['macro_f1']:.4f}, "
            f"ECE {real['ece_uncalibrated']:.4f} -> {real['ece_calibrated']:.4f} with T="
            f"{real['temperature']:.3f}",
            "",
            "| label | precision | recall | F1 | support |",
            "|---|---:|---:|---:|---:|",
        ]
        for name, s in real["per_class"].items():
            lines.append(
                f"| {name} | {s['precision']:.3f} | {s['recall']:.3f} | {s['f1']:.3f} | {s['support']} |"
            )
        lines += ["", "Confusion matrix (rows true, columns predicted): `confusion.png`", ""]
    synth = card.get("eval_synthetic")
    if isinstance(synth, dict):
        lines += _synthetic_markdown(synth)
    bench = card.get("benchmark")
    if isinstance(bench, dict):
        lines += ["## Latency (onnxruntime CPU)", "", "```", json.dumps(bench, indent=1), "```", ""]
    lines += [
        "## Limits",
        "",
        "- Die-level masks are learnt from synthetic maps only (WM-811K has no die labels).",
        "- The real split is stratified random, not lot-disjoint.",
        "",
    ]
    return "\n".join(lines)
