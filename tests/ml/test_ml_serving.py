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


@pytest.mark.parametrize("module", ["ml.serving", "ml.render", "ml.cli", "ml.evaluate"])
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
