"""Serving contract: torch-free import, prediction fields, die grid mapping, BALD."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ml.synth import generate
from ml.taxonomy import PATTERNS


@pytest.mark.parametrize("module", ["ml.serving", "ml.render", "ml.cli", "ml.evaluate", "ml.tta", "ml.benchmark"])
def test_import_does_not_pull_torch(module: str) -> None:
    code = f"import sys, {module}; print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'torchvision', 'segmentation_models_pytorch'))))"
    out = subprocess.run(
        [sys.executable, "-c", "import json; " + code],
        check=True, capture_output=True, text=True, cwd=Path(__file__).resolve().parents[2],
    )
    assert json.loads(out.stdout) == []


def test_predict_fulfils_the_contract(tiny_model: Path) -> None:
    from ml.serving import WaferModel

    model = WaferModel.load(tiny_model)
    assert model.version.startswith("unet-")
    maps = [generate(9, i).dies for i in range(6)] + [np.ones((70, 90), np.uint8)]
    preds = model.predict(maps, mc_samples=4)
    assert len(preds) == len(maps)
    for dies, p in zip(maps, preds, strict=True):
        assert p.label in PATTERNS
        assert set(p.pattern_probs) == set(PATTERNS)
        assert all(0.0 <= v <= 1.0 for v in p.pattern_probs.values())
        assert set(p.patterns) <= set(PATTERNS[1:])
        assert p.die_labels.shape == dies.shape and p.die_labels.dtype == np.uint8
        assert not p.die_labels[dies != 2].any()
        assert (p.die_labels[dies == 2] > 0).all()
        assert p.die_confidence.shape == dies.shape and p.die_confidence.dtype == np.float32
        assert p.embedding.dtype == np.float32 and p.embedding.ndim == 1
        assert p.bald is not None and p.bald >= -1e-6
        assert 0.0 <= p.margin <= 1.0 and p.mean_entropy >= 0.0


def test_predict_is_order_independent(tiny_model: Path) -> None:
    from ml.serving import WaferModel

    model = WaferModel.load(tiny_model)
    maps = [generate(4, i).dies for i in range(5)]
    fwd = model.predict(maps)
    rev = model.predict(maps[::-1])[::-1]
    for a, b in zip(fwd, rev, strict=True):
        assert a.label == b.label
        assert np.array_equal(a.die_labels, b.die_labels)
        assert np.allclose(a.embedding, b.embedding, atol=1e-5)
    assert model.predict([]) == []


def test_logit_offsets_from_the_card_steer_the_label(tiny_model: Path, tmp_path: Path) -> None:
    import shutil

    from ml.serving import WaferModel

    model_dir = shutil.copytree(tiny_model.parent, tmp_path / "m")
    maps = [generate(4, i).dies for i in range(4)]
    base = WaferModel.load(model_dir / tiny_model.name).predict(maps)
    card = json.loads((model_dir / "model_card.json").read_text())
    card["logit_offsets"] = {name: (50.0 if name == "Donut" else 0.0) for name in PATTERNS}
    (model_dir / "model_card.json").write_text(json.dumps(card))
    shifted = WaferModel.load(model_dir / tiny_model.name).predict(maps)
    assert [p.label for p in shifted] == ["Donut"] * len(maps)
    assert all(p.pattern_probs["Donut"] > b.pattern_probs["Donut"] for p, b in zip(shifted, base))


def test_every_view_is_undone_exactly_and_the_eight_are_distinct() -> None:
    from ml.tta import VIEWS, apply_view, undo_view

    x = np.random.default_rng(0).random((2, 3, 8, 8)).astype(np.float32)
    seen = []
    for view in VIEWS:
        y = apply_view(x, view)
        assert np.array_equal(undo_view(y, view), x)
        seen.append(y.tobytes())
    assert len(set(seen)) == len(VIEWS) == 8
    # The first four keep rows as rows: a rectangular grid stays in its placement's rows.
    tall = np.zeros((1, 1, 8, 8), np.float32)
    tall[..., 1:7, 3:5] = 1.0
    assert all(np.array_equal(apply_view(tall, v).sum(axis=3), tall.sum(axis=3)[..., ::s])
               for v, s in zip(VIEWS[:4], (1, 1, -1, -1), strict=True))


def test_views_average_what_each_view_sees_and_one_view_is_the_plain_pass() -> None:
    from ml.tta import VIEWS, apply_view, undo_view, with_views

    rng = np.random.default_rng(1)
    weights = rng.normal(size=(9, 2)).astype(np.float32)

    def forward(x: np.ndarray) -> list[np.ndarray]:
        """Not symmetric: the mask logits depend on the column, the wafer logits on the top rows."""
        cols = np.arange(x.shape[3], dtype=np.float32)
        mask = np.einsum("kc,nchw->nkhw", weights, x[:, :2]) * cols
        wafer = x[:, :, :4].mean(axis=(1, 2, 3))[:, None] * np.arange(9, dtype=np.float32)
        return [mask, wafer, x.mean(axis=(2, 3))]

    x = rng.random((3, 2, 8, 8)).astype(np.float32)
    plain = forward(x)
    assert with_views(forward, 1) is forward
    mask, wafer, emb = with_views(forward, 4)(x)
    per_view = [forward(np.ascontiguousarray(apply_view(x, v))) for v in VIEWS[:4]]
    probs = [np.exp(undo_view(m, v)) / np.exp(undo_view(m, v)).sum(1, keepdims=True)
             for (m, _, _), v in zip(per_view, VIEWS[:4], strict=True)]
    got = np.exp(mask) / np.exp(mask).sum(1, keepdims=True)
    assert np.allclose(got, np.mean(probs, axis=0), atol=1e-5)
    assert np.allclose(wafer, np.mean([w for _, w, _ in per_view], axis=0), atol=1e-6)
    assert not np.allclose(wafer, plain[1])  # the views saw different rows on top
    assert np.allclose(emb, plain[2], atol=1e-6)  # a symmetric output is unchanged
    with pytest.raises(ValueError, match="views must be 1..8"):
        with_views(forward, 9)


def test_the_card_s_views_are_what_serving_averages(tiny_model: Path, tmp_path: Path) -> None:
    import shutil

    from ml.buckets import encode, from_bucket, place, to_bucket
    from ml.serving import WaferModel
    from ml.tta import VIEWS, apply_view, undo_view

    model_dir = shutil.copytree(tiny_model.parent, tmp_path / "m")
    card = json.loads((model_dir / "model_card.json").read_text())
    card["tta_views"] = 4
    (model_dir / "model_card.json").write_text(json.dumps(card))
    plain, tta = WaferModel.load(tiny_model), WaferModel.load(model_dir / tiny_model.name)
    assert (plain.tta_views, tta.tta_views) == (1, 4)
    assert WaferModel.load(model_dir / tiny_model.name, tta_views=2).tta_views == 2  # the ship step's override
    maps = [generate(4, i).dies for i in range(3)] + [np.full((30, 50), 2, np.uint8)]
    got = tta.raw(maps)
    # By hand: the plain graph over each view of the bucketed batch, undone and averaged.
    for i, dies in enumerate(maps):
        x = to_bucket(encode(dies), place(dies.shape))[None]
        outs = [plain.session.run(None, {"input": np.ascontiguousarray(apply_view(x, v))}) for v in VIEWS[:4]]
        wafer = np.mean([o[1] for o in outs], axis=0)[0]
        assert np.allclose(got.wafer_logits[i], wafer, atol=1e-4)
        probs = [undo_view(np.exp(o[0]) / np.exp(o[0]).sum(1, keepdims=True), v)
                 for o, v in zip(outs, VIEWS[:4], strict=True)]
        expected = from_bucket(np.mean(probs, axis=0)[0], place(dies.shape))
        assert np.allclose(got.die_probs[i], expected, atol=1e-4)
    preds = tta.predict(maps)
    assert [p.die_labels.shape for p in preds] == [m.shape for m in maps]


def test_a_card_with_an_impossible_view_count_fails_at_load(tiny_model: Path, tmp_path: Path) -> None:
    import shutil

    from ml.serving import WaferModel

    model_dir = shutil.copytree(tiny_model.parent, tmp_path / "m")
    card = json.loads((model_dir / "model_card.json").read_text())
    card["tta_views"] = 9
    (model_dir / "model_card.json").write_text(json.dumps(card))
    with pytest.raises(ValueError, match="views must be 1..8"):
        WaferModel.load(model_dir / tiny_model.name)
