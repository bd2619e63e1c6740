"""Training lowers the loss, checkpoints resume, ONNX matches PyTorch."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import onnxruntime as ort
import torch

from ml.buckets import IN_CHANNELS, encode, place, to_bucket
from ml.synth import REGION_PATTERNS, generate
from ml.taxonomy import pattern_index
from ml.training.batches import build_augment, iter_batches
from ml.training.losses import Losses, dice_focal, region_loss
from ml.training.model import ModelConfig, WaferNet
from ml.training.precision import PRECISIONS, forward_autocast, native_bf16, resolve_precision
from ml.training.train import (
    TrainConfig,
    competes,
    load_checkpoint,
    seed_everything,
    should_stop,
    should_validate,
    synth_samples,
    train,
)


@pytest.mark.parametrize(("region_head", "precision"), [(False, "fp32"), (True, "fp32"), (True, "bf16")])
def test_a_few_steps_lower_the_loss(tiny_config, region_head: bool, precision: str) -> None:  # type: ignore[no-untyped-def]
    """Forced bf16 runs on any CPU (emulated where not native), so every case holds on every host."""
    seed_everything(0)
    net = WaferNet(replace(tiny_config.model, region_head=region_head))
    losses = Losses(tiny_config)
    batch = next(iter_batches(synth_samples([generate(0, i) for i in range(16)]), 16,
                              np.random.default_rng(0), None))
    opt = torch.optim.AdamW(net.parameters(), lr=3e-3)
    history, region = [], []
    for _ in range(12):
        with forward_autocast(precision, torch.device("cpu")):
            out = net.outputs(batch.x, decode=batch.has_mask)
        assert out.mask_logits.dtype == (torch.bfloat16 if precision == "bf16" else torch.float32)
        regions = None if out.region_logits is None else (out.region_logits, batch.regions, batch.x[:, :1])
        loss, parts = losses(out.mask_logits, out.wafer_logits, batch.target, batch.mask, batch.has_mask, regions)
        assert loss.dtype == torch.float32  # the losses upcast bfloat16 logits
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append(loss.item())
        region.append(parts.get("region"))
    assert history[-1] < 0.8 * history[0]
    assert all(p.dtype == torch.float32 for p in net.parameters())
    if region_head:
        assert region[-1] is not None and region[-1] < region[0]  # type: ignore[operator]
    else:
        assert region == [None] * 12


def test_precision_auto_means_bf16_only_where_the_hardware_has_it() -> None:
    from ml.cli import train_cmd

    cpu = torch.device("cpu")
    assert resolve_precision("auto", cpu) == ("bf16" if native_bf16(cpu) else "fp32")
    assert resolve_precision("fp32", cpu) == "fp32" and resolve_precision("bf16", cpu) == "bf16"
    with pytest.raises(ValueError, match="precision must be one of"):
        resolve_precision("fp16", cpu)
    option = next(p for p in train_cmd.params if p.name == "precision")
    assert tuple(option.type.choices) == PRECISIONS  # type: ignore[attr-defined]


def test_decoding_a_subset_gives_those_maps_masks_and_the_same_wafer_outputs(tiny_config) -> None:  # type: ignore[no-untyped-def]
    """Training decodes only the maps with die targets; what it computes for them must not change."""
    seed_everything(0)
    net = WaferNet(replace(tiny_config.model, region_head=True)).eval()
    grids = [d for d in (generate(5, i).dies for i in range(12)) if place(d.shape).bucket == 64][:4]
    x = torch.from_numpy(np.stack([to_bucket(encode(d), place(d.shape)) for d in grids]))
    pick = torch.tensor([True, False, True, False])
    with torch.no_grad():
        full, some, none = (net.outputs(x, decode=d) for d in (None, pick, torch.zeros(4, dtype=torch.bool)))
    assert torch.allclose(some.mask_logits, full.mask_logits[pick], atol=1e-5)
    assert some.region_logits is not None and full.region_logits is not None
    assert torch.allclose(some.region_logits, full.region_logits[pick], atol=1e-5)
    assert torch.equal(some.wafer_logits, full.wafer_logits) and torch.equal(none.embedding, full.embedding)
    assert none.mask_logits.shape == (0, 9, 64, 64)
    assert none.region_logits is not None and none.region_logits.shape == (0, len(REGION_PATTERNS), 64, 64)


def test_validation_runs_every_few_epochs_before_the_tail_and_every_epoch_in_it() -> None:
    cfg = TrainConfig(epochs=40, early_stop_from=0.75, validate_every=5)
    assert [e + 1 for e in range(20) if should_validate(e, 0.5, cfg)] == [5, 10, 15, 20]
    assert all(should_validate(e, 0.8, cfg) for e in range(30, 39))  # the tail: every epoch
    assert should_validate(38, 0.6, cfg) is False and should_validate(39, 0.6, cfg) is True  # last epoch


def test_a_run_validates_the_interval_and_the_last_epoch_and_records_its_precision(  # type: ignore[no-untyped-def]
    tiny_config, real_fixture: Path, tmp_path: Path
) -> None:
    from ml.data import load_npz

    ws = load_npz(real_fixture)
    cfg = replace(tiny_config, epochs=5, validate_every=2, patience=10, real_per_epoch=16, synth_per_epoch=16)
    train(cfg, ws, ws, tmp_path / "run")
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    # The tiny run never reaches the tail by progress: 2 and 4 by the interval, 5 as the last epoch.
    assert [h["epoch"] for h in history if "macro_f1" in h] == [2, 4, 5]
    assert all("loss" in h and "elapsed_s" in h for h in history)
    best = torch.load(tmp_path / "run" / "best.pt", weights_only=False)
    assert best["state"]["epoch"] == 5
    # The checkpoint records the precision the run resolved, not "auto".
    assert best["config"]["precision"] == resolve_precision("auto", torch.device("cpu"))


def test_a_resumed_run_keeps_the_precision_it_started_in(  # type: ignore[no-untyped-def]
    tiny_config, real_fixture: Path, tmp_path: Path
) -> None:
    from ml.data import load_npz

    ws = load_npz(real_fixture)
    small = replace(tiny_config, real_per_epoch=16, synth_per_epoch=16)
    train(replace(small, epochs=1, precision="bf16"), ws, ws, tmp_path)  # bf16 on any host (emulated or not)
    train(replace(small, epochs=2), ws, ws, tmp_path, resume=True)  # "auto" would be fp32 on some hosts
    assert torch.load(tmp_path / "last.pt", weights_only=False)["config"]["precision"] == "bf16"
    # A checkpoint from before the option trained in float32, and resumes so.
    ck = torch.load(tmp_path / "last.pt", weights_only=False)
    del ck["config"]["precision"]
    torch.save(ck, tmp_path / "last.pt")
    train(replace(small, epochs=3), ws, ws, tmp_path, resume=True)
    assert torch.load(tmp_path / "last.pt", weights_only=False)["config"]["precision"] == "fp32"
    # Asking for a precision wins over the checkpoint's.
    train(replace(small, epochs=4, precision="bf16"), ws, ws, tmp_path, resume=True)
    assert torch.load(tmp_path / "last.pt", weights_only=False)["config"]["precision"] == "bf16"


def test_region_loss_reads_on_wafer_pixels_only_and_rewards_the_true_regions() -> None:
    torch.manual_seed(0)
    target = (torch.rand(3, len(REGION_PATTERNS), 16, 16) < 0.3).float()
    on = torch.zeros(3, 1, 16, 16)
    on[:, :, 2:14, 2:14] = 1.0
    target = target * on
    right = 8.0 * (2 * target - 1)
    wrong = -right
    assert region_loss(right, target, on).item() < 0.01
    assert region_loss(wrong, target, on).item() > 2.0
    noisy = right.clone()
    noisy[:, :, :2] = torch.randn(3, len(REGION_PATTERNS), 2, 16) * 10  # off the wafer
    assert region_loss(noisy, target, on).item() == pytest.approx(region_loss(right, target, on).item())
    leaf = noisy.clone().requires_grad_(True)
    region_loss(leaf, target, on).backward()
    assert leaf.grad is not None and leaf.grad[:, :, :2].abs().max().item() == 0.0


def test_region_head_is_extra_planes_that_serving_never_sees(tiny_config) -> None:  # type: ignore[no-untyped-def]
    net = WaferNet(replace(tiny_config.model, region_head=True)).eval()
    x = torch.zeros(2, IN_CHANNELS, 64, 64)
    with torch.no_grad():
        out, (mask_logits, _, _) = net.outputs(x), net(x)
    assert out.region_logits is not None and out.region_logits.shape == (2, len(REGION_PATTERNS), 64, 64)
    assert mask_logits.shape == (2, 9, 64, 64) and torch.equal(mask_logits, out.mask_logits)
    assert WaferNet(replace(tiny_config.model, region_head=False)).outputs(x).region_logits is None
    # Checkpoints from before the option load as what they are: no region head.
    old = tiny_config.model.to_dict()
    del old["region_head"]
    assert ModelConfig.from_dict(old).region_head is False


def test_real_maps_add_a_softmax_term_synthetic_maps_do_not(tiny_config) -> None:  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    logits = torch.randn(4, 9)
    target = torch.eye(9)[[3, 0, 5, 8]]
    has_mask = torch.tensor([False, True, False, True])
    mask_logits, mask = torch.randn(4, 9, 32, 32), torch.randint(0, 9, (4, 32, 32))
    # The mask logits come for the maps with masks only (the decoder skips the others).
    _, parts = Losses(tiny_config)(mask_logits[has_mask], logits, target, mask, has_mask)
    expected = torch.nn.functional.cross_entropy(logits[[0, 2]], torch.tensor([3, 5]))
    assert abs(parts["ce"] - expected.item()) < 1e-6
    assert parts["mask"] == pytest.approx(dice_focal(mask_logits[[1, 3]], mask[[1, 3]]).item())
    _, synth_only = Losses(tiny_config)(mask_logits, logits, target, mask, torch.ones(4, dtype=torch.bool))
    assert "ce" not in synth_only


def test_mask_loss_equals_smp_dice_plus_focal_in_value_and_gradient() -> None:
    """``dice_focal`` replaced smp's losses for speed; the recipe's numbers rest on it computing the same."""
    from segmentation_models_pytorch.losses import DiceLoss, FocalLoss

    from ml.training.batches import IGNORE

    torch.manual_seed(0)
    logits = 3 * torch.randn(6, 9, 32, 32)
    target = torch.randint(0, 8, (6, 32, 32))  # class 8 absent: Dice must count it as zero loss
    target[:2, :10] = IGNORE
    target[5] = IGNORE  # a map with no target at all
    dice = DiceLoss(mode="multiclass", from_logits=True, ignore_index=IGNORE)
    focal = FocalLoss(mode="multiclass", ignore_index=IGNORE)
    ours, ref = logits.clone().requires_grad_(True), logits.clone().requires_grad_(True)
    value = dice_focal(ours, target)
    expected = dice(ref, target) + focal(ref, target)
    value.backward()
    expected.backward()
    assert abs(value.item() - expected.item()) < 1e-5 * expected.item()
    assert ours.grad is not None and ref.grad is not None
    assert torch.allclose(ours.grad, ref.grad, rtol=1e-4, atol=1e-9)
    assert ours.grad[5].abs().max().item() == 0.0  # ignored pixels get no gradient


def test_wafer_head_pools_the_configured_encoder_levels(tiny_config) -> None:  # type: ignore[no-untyped-def]
    net = WaferNet(tiny_config.model).eval()
    levels = net.encoder.out_channels[-len(tiny_config.model.head_channels):]
    assert [m[0].in_channels for m in net.expand] == list(levels)
    assert [m[0].out_channels for m in net.expand] == list(tiny_config.model.head_channels)
    with torch.no_grad():
        _, wafer, emb = net(torch.zeros(2, IN_CHANNELS, 64, 64))
    assert wafer.shape == (2, 9) and emb.shape == (2, tiny_config.model.embedding_dim)


def test_early_stopping_waits_for_the_decayed_part_of_the_schedule() -> None:
    cfg = TrainConfig(patience=6, early_stop_from=0.75)
    assert not should_stop(12, 0.5, cfg)  # a plateau at the high rate: keep going
    assert not should_stop(5, 0.9, cfg)  # still within patience
    assert should_stop(6, 0.75, cfg)
    assert should_stop(6, 0.9, TrainConfig(patience=6, early_stop_from=0.0)) is True


def test_only_the_decayed_tail_or_the_last_epoch_can_be_selected() -> None:
    cfg = TrainConfig(epochs=40, early_stop_from=0.75)
    assert not competes(21, 0.5, cfg)  # a high-rate peak (v7's epoch 22) cannot ship
    assert competes(30, 0.76, cfg)
    assert competes(39, 0.6, cfg)  # last planned epoch
    assert competes(12, 1.0, cfg)  # the time budget ended the schedule


def test_augmented_batches_keep_masks_on_fails_and_regions_under_their_labels() -> None:
    samples = synth_samples([generate(1, i) for i in range(8)])
    x, target, mask, has_mask, regions = next(iter_batches(samples, 8, np.random.default_rng(1), build_augment()))
    assert x.shape[1] == IN_CHANNELS and x.shape[2] % 32 == 0
    assert has_mask.all() and target.shape == (8, 9)
    fail = x[:, 1] > 0.5
    assert not mask[~fail].any()
    assert regions.shape == (8, len(REGION_PATTERNS), *x.shape[2:])
    assert not regions.permute(1, 0, 2, 3)[:, x[:, 0] == 0].any(), "a region off the wafer"
    # Geometry moved labels and regions together: a die labelled with a
    # pattern lies in that pattern's region and in none above it.
    shaped = [pattern_index(name) for name in REGION_PATTERNS]
    assert np.isin(mask.numpy(), shaped).sum() > 100
    for j, name in enumerate(REGION_PATTERNS):
        labelled = mask == pattern_index(name)
        assert (regions[:, j][labelled] == 1).all()
        assert not regions[:, j + 1:].permute(1, 0, 2, 3)[:, labelled].any()


def test_augmentation_is_seeded() -> None:
    """Same seeds, same batches: albumentations' own generator follows the seed we give it."""
    samples = synth_samples([generate(1, i) for i in range(24)])

    def first_batches(seed: int) -> list[torch.Tensor]:
        aug = build_augment()
        aug.set_random_seed(seed)
        return [b.x for b in iter_batches(samples, 8, np.random.default_rng(0), aug)]

    a, b, c = first_batches(5), first_batches(5), first_batches(6)
    assert all(torch.equal(u, v) for u, v in zip(a, b, strict=True))
    assert not all(u.shape == v.shape and torch.equal(u, v) for u, v in zip(a, c, strict=True))


def test_the_same_config_trains_the_same_run_twice(tiny_config, real_fixture: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """"Seeds fixed" covers the augmentation too, not only torch's and numpy's generators."""
    from ml.data import load_npz

    ws = load_npz(real_fixture)
    # float32: bfloat16 convolutions differ by ~1e-3 from run to run, which
    # would hide what this test is about.
    cfg = replace(tiny_config, epochs=1, precision="fp32")
    losses = []
    for run in ("a", "b"):
        train(cfg, ws, ws, tmp_path / run)
        losses.append(json.loads((tmp_path / run / "history.json").read_text())[0]["loss"])
    # Float summation order still varies a little between runs (oneDNN), so
    # equal to 1e-4; different augmentations moved these losses by ~1e-2.
    assert losses[0] == pytest.approx(losses[1], rel=1e-4)


def test_training_run_checkpoints_and_resumes(  # type: ignore[no-untyped-def]
    trained_run: Path, tiny_config, real_fixture: Path, tmp_path: Path
) -> None:
    import shutil

    from ml.data import load_npz

    history = json.loads((trained_run / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2]
    assert (trained_run / "best.pt").exists()
    # The checkpoint's model is the weight average of every step, not the trained weights.
    last = torch.load(trained_run / "last.pt", weights_only=False)
    assert last["ema_updates"] == history[-1]["step"]
    assert any(not torch.equal(last["model"][k], last["trained"][k]) for k in last["model"]
               if last["model"][k].is_floating_point())
    # Resume a copy: the session's run (and the ONNX model exported from its
    # best.pt) must not change under the other tests.
    run = shutil.copytree(trained_run, tmp_path / "run")
    ws = load_npz(real_fixture)
    train(replace(tiny_config, epochs=3), ws, ws, run, resume=True)
    history = json.loads((run / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2, 3]
    assert torch.load(run / "last.pt", weights_only=False)["ema_updates"] == history[-1]["step"]


def test_onnx_export_matches_pytorch(trained_run: Path, tiny_model: Path) -> None:
    from ml.export import parity

    net, _ = load_checkpoint(trained_run / "best.pt")
    x = (np.random.default_rng(0).random((3, IN_CHANNELS, 64, 96)) > 0.5).astype(np.float32)
    assert parity(net, tiny_model, x) < 1e-4
    sess = ort.InferenceSession(str(tiny_model), providers=["CPUExecutionProvider"])
    assert sess.get_modelmeta() is not None
    shapes = [o.shape for o in sess.get_outputs()]
    assert shapes[0][0] == "batch" and shapes[0][2] == "height"


def test_the_card_counts_the_epochs_run_not_the_best_one(trained_run: Path, tiny_model: Path) -> None:
    history = json.loads((trained_run / "history.json").read_text())
    training = json.loads((tiny_model.parent / "model_card.json").read_text())["training"]
    best = torch.load(trained_run / "best.pt", weights_only=False)["state"]
    assert training["epochs_run"] == len(history) == 2
    assert training["elapsed_s"] == history[-1]["elapsed_s"]
    assert training["best_epoch"] == best["epoch"] and training["best_calib_macro_f1"] == best["best_f1"]


def test_static_int8_graph_runs_and_keeps_the_contract(tiny_model: Path, tmp_path: Path) -> None:
    import shutil

    from ml.benchmark import compare
    from ml.quantize import quantize
    from ml.serving import WaferModel, mc_head_path

    for f in (tiny_model.parent / "model_card.json", mc_head_path(tiny_model)):
        shutil.copy(f, tmp_path / f.name)
    maps = [generate(6, i).dies for i in range(12)]
    q = quantize(tiny_model, tmp_path / "model.onnx", maps)
    ops = {n.op_type for n in __import__("onnx").load(str(q)).graph.node}
    assert "QuantizeLinear" in ops and "DequantizeLinear" in ops
    preds = WaferModel.load(q).predict(maps[:3])
    assert [p.die_labels.shape for p in preds] == [m.shape for m in maps[:3]]
    small = [m for m in maps if max(m.shape) <= 64]
    fp32_ms, int8_ms = compare(WaferModel.load(tiny_model), WaferModel.load(q), small, rounds=1)
    assert fp32_ms > 0 and int8_ms > 0


def test_a_model_trained_on_fewer_input_channels_still_serves(tiny_config, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Models from before the line channels (3 planes) load and predict like the current ones."""
    from ml.export import base_card, export_onnx
    from ml.serving import WaferModel

    seed_everything(0)
    net = WaferNet(replace(tiny_config.model, in_channels=3)).eval()
    path = tmp_path / "model.onnx"
    export_onnx(net, path)
    (tmp_path / "model_card.json").write_text(json.dumps(base_card(net, {}, path)))
    model = WaferModel.load(path)
    assert model.channels == 3
    dies = generate(4, 2).dies
    with torch.no_grad():
        x = torch.from_numpy(to_bucket(encode(dies, 3), place(dies.shape))[None])
        expected = net(x)[1].numpy()
    assert np.allclose(model.raw([dies]).wafer_logits, expected, atol=1e-4)
    assert model.predict([dies])[0].die_labels.shape == dies.shape


def test_train_step_benchmark_prints_both_losses_and_the_recipe_step_variants() -> None:
    """The script behind the step speed-up figures in docs/model.md keeps running."""
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]
    out = subprocess.run(
        [sys.executable, str(root / "scripts" / "bench_train_step.py"), "--steps", "2", "--batch", "4",
         "--region-head"],
        capture_output=True, text=True, check=True, cwd=root, env={**os.environ, "PYTHONPATH": str(root)},
    )
    report = json.loads(out.stdout)
    assert report["steps"] == 2
    for part in ("train_step", "mask_loss_fwd_bwd"):
        assert set(report[part]) == {"smp_dice_focal", "dice_focal"}
        assert all(v["p50_ms"] > 0 for v in report[part].values())
    assert report["step_speedup_vs_smp"] > 0 and report["loss_speedup_vs_smp"] > 0
    variants = {"fp32_decode_all", "fp32_decode_synthetic", "bf16_decode_synthetic"}
    assert set(report["recipe_step"]) == set(report["recipe_speedup_vs_fp32_decode_all"]) == variants
    assert report["recipe_speedup_vs_fp32_decode_all"]["fp32_decode_all"] == 1.0
    assert report["region_head"] is True and 0.5 < report["real_share"] < 0.7
