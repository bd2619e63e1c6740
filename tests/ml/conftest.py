"""Fixtures for the ML tests: a tiny model (trained for a few steps) exported to ONNX.

Why tiny: the suite must stay fast on two CPU cores; contract, parity and
metric plumbing do not depend on model size.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ml.data import DEFAULT_DATA_DIR, TEST_FILE, WaferSet, load_npz, save_npz


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread() -> None:
    """One intra-op thread: on a shared 2-core box, spinning OpenMP workers cost more than they give."""
    import torch

    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_config():  # type: ignore[no-untyped-def]
    from ml.training.model import ModelConfig
    from ml.training.train import TrainConfig

    model = ModelConfig(
        encoder="tu-mobilenetv3_small_050", decoder_channels=(16, 8, 8, 8), embedding_dim=16,
        head_channels=(8, 16),
    )
    return TrainConfig(
        epochs=2, real_per_epoch=48, synth_per_epoch=48, batch_size=16, synth_val=8,
        patience=5, model=model,
    )


@pytest.fixture(scope="session")
def real_fixture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small wm811k-format npz derived at test time from the shared real test file."""
    ws = load_npz(DEFAULT_DATA_DIR / TEST_FILE, limit=3000)
    idx = np.concatenate([np.flatnonzero(ws.labels == k)[:6] for k in range(9)])
    path = tmp_path_factory.mktemp("real") / "wm811k_small.npz"
    save_npz(path, ws.subset(idx))
    return path


@pytest.fixture(scope="session")
def trained_run(tiny_config, real_fixture: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:  # type: ignore[no-untyped-def]
    """Two tiny epochs of the real training loop; returns the run directory."""
    from ml.training.train import train

    ws = load_npz(real_fixture)
    out = tmp_path_factory.mktemp("run")
    train(tiny_config, ws, WaferSet(ws.maps[::3], ws.labels[::3]), out)
    return out


@pytest.fixture(scope="session")
def tiny_model(trained_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny run exported to ONNX with a model card (uncalibrated)."""
    from ml.export import export_checkpoint

    return export_checkpoint(trained_run / "best.pt", tmp_path_factory.mktemp("model"))
