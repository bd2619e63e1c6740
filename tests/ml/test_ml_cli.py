"""CLI commands on a tiny exported model: evaluate (real + synthetic), predict, calibrate."""

from __future__ import annotations

import io
import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from ml.cli import ML_COMMANDS, GraphScore, evaluate_cmd, int8_earns_it, predict_cmd, train_cmd
from ml.data import TRAIN_FILE, fit_calib_split, load_die_map, load_npz, stratified_split
from ml.evaluate import evaluate_synthetic, overlap_breakdown
from ml.metrics import MaskOverlap
from ml.serving import WaferModel
from ml.synth import SynthMap, evaluation_maps, generate
from ml.taxonomy import PATTERNS


def _copy_model(tiny_model: Path, dst: Path) -> Path:
    shutil.copytree(tiny_model.parent, dst)
    return dst / tiny_model.name


def test_commands_are_exposed_by_name() -> None:
    assert {c.name for c in ML_COMMANDS} == {"train", "evaluate", "predict", "export"}


def test_evaluate_real_writes_report_png_and_card(tiny_model: Path, real_fixture: Path, tmp_path: Path) -> None:
    model = _copy_model(tiny_model, tmp_path / "m")
    out = tmp_path / "eval.json"
    res = CliRunner().invoke(
        evaluate_cmd, ["--dataset", str(real_fixture), "--model", str(model), "--json", str(out)]
    )
    assert res.exit_code == 0, res.output
    report = json.loads(out.read_text())
    cm = np.array(report["confusion_matrix"])
    assert cm.shape == (9, 9) and cm.sum() == report["maps"] == len(load_npz(real_fixture))
    assert 0.0 <= report["macro_f1"] <= 1.0 and set(report["per_class"]) == set(PATTERNS)
    assert "ECE" in res.output
    png = (model.parent / "confusion.png").read_bytes()
    assert Image.open(io.BytesIO(png)).size[0] > 300
    card = json.loads((model.parent / "model_card.json").read_text())
    assert card["eval_real"]["macro_f1"] == report["macro_f1"]
    assert "macro-F1" in (model.parent / "model_card.md").read_text()


def test_evaluate_synthetic_reports_iou(tiny_model: Path, tmp_path: Path) -> None:
    model = _copy_model(tiny_model, tmp_path / "m")
    out = tmp_path / "synth.json"
    res = CliRunner().invoke(
        evaluate_cmd, ["--synthetic", "10", "--model", str(model), "--json", str(out)]
    )
    assert res.exit_code == 0, res.output
    report = json.loads(out.read_text())
    assert set(report["iou"]) == set(PATTERNS[1:])
    assert 0.0 <= report["mean_iou"] <= 1.0
    maps = evaluation_maps(10)
    assert report["maps_single"] == sum(len(m.patterns) == 1 for m in maps)
    assert report["maps_mixture"] == sum(len(m.patterns) > 1 for m in maps)
    cm = np.array(report["die_confusion"])
    assert cm.shape == (9, 9) and cm.sum() == sum(int((m.dies == 2).sum()) for m in maps)
    for name, m in report["missed"].items():
        code = PATTERNS.index(name)
        assert m["maps"] == sum(int((s.die_labels == code).sum()) >= 5 for s in maps)
        assert 0 <= m["missed"] <= m["maps"]
    assert "mixtures" in res.output and "missed on" in res.output
    assert "outside the" in res.output
    assert "wafers missed" in (model.parent / "model_card.md").read_text()


def test_evaluate_synthetic_scores_overlap_dies_apart(tiny_model: Path) -> None:
    """The IoU outside overlaps leaves exactly the overlap dies out; they are tallied apart."""
    maps = evaluation_maps(10)
    overlap_fails = [m.overlap & (m.dies == 2) for m in maps]
    assert sum(int(o.sum()) for o in overlap_fails) > 0, "map 9 of the stream is a mixture with overlaps"
    report = evaluate_synthetic(tiny_model, 10)
    preds = WaferModel.load(tiny_model).predict([m.dies for m in maps])
    truth = np.concatenate([m.die_labels[(m.dies == 2) & ~m.overlap] for m in maps])
    guess = np.concatenate([p.die_labels[(m.dies == 2) & ~m.overlap] for m, p in zip(maps, preds)])
    for name, iou in report["iou_outside_overlaps"].items():
        code = PATTERNS.index(name)
        union = int(((truth == code) | (guess == code)).sum())
        assert (iou is None) == (union == 0)
        if union:
            assert iou == pytest.approx(int(((truth == code) & (guess == code)).sum()) / union)
    assert report["overlap_dies"] == sum(int(o.sum()) for o in overlap_fails)
    for name, tally in report["overlap"].items():
        code = PATTERNS.index(name)
        in_truth = [(m.die_labels == code) & o for m, o in zip(maps, overlap_fails)]
        assert tally["dies"] == sum(int(t.sum()) for t in in_truth)
        assert tally["correct"] == sum(int((t & (p.die_labels == code)).sum())
                                       for t, p in zip(in_truth, preds))


def test_calibration_stores_a_positive_temperature(tiny_model: Path, real_fixture: Path, tmp_path: Path) -> None:
    from ml.evaluate import calibrate

    model = _copy_model(tiny_model, tmp_path / "m")
    t = calibrate(model, load_npz(real_fixture))
    assert t > 0 and json.loads((model.parent / "model_card.json").read_text())["temperature"] == t


def test_calibrated_offsets_do_not_lower_macro_f1_on_the_calibration_maps(
    tiny_model: Path, real_fixture: Path, tmp_path: Path
) -> None:
    from ml.evaluate import calibrate, evaluate_real

    ws = load_npz(real_fixture)
    model = _copy_model(tiny_model, tmp_path / "m")
    before = float(evaluate_real(model, ws, "fixture")["macro_f1"])  # type: ignore[arg-type]
    calibrate(model, ws)
    card = json.loads((model.parent / "model_card.json").read_text())
    assert set(card["logit_offsets"]) == set(PATTERNS)
    after = float(evaluate_real(model, ws, "fixture")["macro_f1"])  # type: ignore[arg-type]
    assert after >= before


def test_predict_prints_patterns_and_writes_overlay(tiny_model: Path, tmp_path: Path) -> None:
    m = generate(21, 0)
    npy = tmp_path / "wafer.npy"
    np.save(npy, m.dies)
    png = tmp_path / "wafer.png"
    Image.fromarray((m.dies * 127).astype(np.uint8)).save(png)
    assert np.array_equal(load_die_map(png), m.dies)
    for path in (npy, png):
        res = CliRunner().invoke(predict_cmd, [str(path), "--model", str(tiny_model), "--mc-samples", "3"])
        assert res.exit_code == 0, res.output
        assert "BALD" in res.output and any(name in res.output for name in PATTERNS)
        overlay = path.with_name(path.stem + ".overlay.png")
        assert Image.open(overlay).size[0] >= 200


def test_fixed_split_is_stratified_disjoint_and_stable() -> None:
    labels = np.repeat(np.arange(9), [50, 20, 10, 10, 10, 10, 3, 5, 7])
    keep, held = stratified_split(labels, 0.1)
    assert not set(keep) & set(held) and len(keep) + len(held) == len(labels)
    assert set(labels[held]) == set(range(9))
    assert np.array_equal(held, stratified_split(labels, 0.1)[1])


def test_real_split_holds_every_class() -> None:
    fit, calib = fit_calib_split()
    assert set(calib.labels.tolist()) == set(range(9))
    assert len(fit) + len(calib) == 18030


@pytest.mark.parametrize(
    ("int8_f1", "int8_iou", "int8_ms", "adopted"),
    [
        (0.902, 0.805, 0.8, True),  # within a point on both, faster
        (0.902, 0.779, 0.8, False),  # v18: macro-F1 kept, die masks 3 points worse
        (0.894, 0.809, 0.8, False),  # masks kept, macro-F1 1.2 points worse
        (0.906, 0.809, 1.3, False),  # as good, but slower
        (0.896, 0.799, 0.8, True),  # exactly one point lower on both: still within
        (0.902, None, 0.8, False),  # no IoU measured for INT8: not cleared
    ],
)
def test_int8_must_keep_both_the_wafer_score_and_the_die_masks(
    int8_f1: float, int8_iou: float | None, int8_ms: float, adopted: bool
) -> None:
    fp32 = GraphScore(macro_f1=0.906, mean_iou=0.809)
    assert int8_earns_it(fp32, GraphScore(int8_f1, int8_iou), 1.2, int8_ms) is adopted


def test_int8_is_judged_on_macro_f1_alone_when_no_pattern_gave_an_iou() -> None:
    no_iou = GraphScore(macro_f1=0.906, mean_iou=None)
    assert int8_earns_it(no_iou, GraphScore(0.902, None), 1.2, 0.8)
    assert not int8_earns_it(no_iou, GraphScore(0.890, None), 1.2, 0.8)


def test_overlap_breakdown_leaves_overlap_dies_out_and_tallies_them() -> None:
    """Hand-counted: one map, codes 1 (Center) and 8 (Scratch), three overlap dies."""
    c, s = PATTERNS.index("Center"), PATTERNS.index("Scratch")
    truth = np.array([[c, c, s, s, 0], [c, s, s, 0, 0]], dtype=np.uint8)
    guess = np.array([[c, s, s, c, 0], [c, c, s, 0, 0]], dtype=np.uint8)
    overlap = np.array([[0, 0, 1, 1, 1], [0, 0, 0, 0, 0]], dtype=bool)  # (0, 4) passes
    m = SynthMap(dies=np.where(truth > 0, 2, 1).astype(np.uint8), die_labels=truth,
                 patterns=("Center", "Scratch"), regions=np.where(overlap, 0b11, 0).astype(np.uint8))
    out = overlap_breakdown(MaskOverlap.of([truth], [guess]), [m], [truth], [guess])
    assert out["overlap_dies"] == 2
    assert out["overlap"] == {"Scratch": {"dies": 2, "correct": 1}}
    iou = out["iou_outside_overlaps"]
    # Outside overlaps: Center true at (0,0) (0,1) (1,0), guessed at (0,0) (1,1) (1,0).
    assert iou["Center"] == pytest.approx(2 / 4)
    # Scratch true at (1,1) (1,2), guessed at (0,1) (1,2).
    assert iou["Scratch"] == pytest.approx(1 / 3)
    assert set(k for k, v in iou.items() if v is not None) == {"Center", "Scratch"}
    assert out["mean_iou_outside_overlaps"] == pytest.approx((2 / 4 + 1 / 3) / 2)


@pytest.mark.parametrize("adopt", [True, False])
def test_ship_writes_a_card_that_describes_the_shipped_graph(  # type: ignore[no-untyped-def]
    trained_run: Path, real_fixture: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    adopt: bool,
) -> None:
    """Whether or not INT8 is adopted, the card's evaluations are those of the file that ships.

    The decision is pinned, so both branches run: a tiny model's timing is
    noise and its INT8 scores land either side of the one-point rule by
    chance (the rule has its own tests above).
    """
    import ml.benchmark
    import ml.cli
    from ml.cli import reproduce_command, ship
    from ml.data import TEST_FILE, TRAIN_FILE
    from ml.evaluate import evaluate_real, evaluate_synthetic
    from ml.training.train import load_checkpoint

    monkeypatch.setattr(ml.benchmark, "compare", lambda a, b, maps: (2.0, 1.0))
    monkeypatch.setattr(ml.cli, "int8_earns_it", lambda fp32, int8, fp32_ms, int8_ms: adopt)

    data = tmp_path / "data"
    data.mkdir()
    for name in (TRAIN_FILE, TEST_FILE):
        shutil.copy(real_fixture, data / name)
    model = ship(trained_run / "best.pt", tmp_path / "ship", data, synth_maps=6, int8_dir=tmp_path / "int8")
    card = json.loads((model.parent / "model_card.json").read_text())
    assert card["int8"]["adopted"] == adopt
    assert card["version"].endswith("-int8") == adopt
    same = json.dumps(card["eval_synthetic"], sort_keys=True)  # NaN-safe comparison
    assert same == json.dumps(evaluate_synthetic(model, 6), sort_keys=True)
    real = evaluate_real(model, load_npz(data / TEST_FILE), TEST_FILE)
    assert card["eval_real"]["macro_f1"] == real["macro_f1"]
    assert card["eval_real"]["confusion_matrix"] == real["confusion_matrix"]
    # The report files beside the model are the card's, not the other graph's.
    for name, key in (("eval_real.json", "eval_real"), ("eval_synthetic.json", "eval_synthetic")):
        on_disk = json.loads((model.parent / name).read_text())
        assert json.dumps(on_disk, sort_keys=True) == json.dumps(card[key], sort_keys=True)
    assert card["onnx_parity_max_abs_diff"] < 1e-4
    # The tiny run's command differs from the shipped one, and the card says how.
    assert card["reproduce"] == reproduce_command(load_checkpoint(trained_run / "best.pt")[1]["config"])
    assert "--epochs 2" in card["reproduce"] and "--encoder tu-mobilenetv3_small_050" in card["reproduce"]


@pytest.mark.parametrize(
    ("iou", "ms", "views"),
    [
        ({1: 0.837, 2: 0.841, 4: 0.844, 8: 0.8445}, {1: 1.1, 2: 2.2, 4: 4.4, 8: 8.8}, 4),
        ({1: 0.837, 2: 0.841, 4: 0.844, 8: 0.849}, {1: 1.1, 2: 2.2, 4: 4.4, 8: 10.5}, 4),  # 8 over the bar
        # v26: 8 views timed 8.5 ms, inside the bar but not inside half of it
        ({1: 0.8382, 2: 0.8429, 4: 0.8442, 8: 0.8465}, {1: 0.92, 2: 2.07, 4: 4.16, 8: 8.49}, 2),
        ({1: 0.837, 2: 0.841, 4: 0.844, 8: 0.849}, {1: 1.1, 2: 2.2, 4: 5.2, 8: 10.4}, 2),  # 4 over half the bar
        ({1: 0.837, 2: 0.8385, 4: 0.838, 8: 0.839}, {1: 1.1, 2: 2.2, 4: 4.4, 8: 8.8}, 1),  # gains < 0.002
        ({1: 0.837, 2: 0.8395, 4: 0.838, 8: 0.8375}, {1: 1.1, 2: 2.2, 4: 4.4, 8: 8.8}, 2),
        ({1: None, 2: None, 4: None, 8: None}, {1: 1.1, 2: 2.2, 4: 4.4, 8: 8.8}, 1),  # no pattern occurred
    ],
)
def test_test_time_views_are_the_fewest_near_the_best_inside_half_the_latency_bar(
    iou: dict[int, float | None], ms: dict[int, float], views: int
) -> None:
    from ml.cli import tta_views_that_earn_it

    assert tta_views_that_earn_it(iou, ms) == views


@pytest.mark.parametrize(("candidate", "keeps_scores", "served"), [(4, True, 4), (4, False, 1), (1, True, 1)])
def test_ship_serves_the_chosen_views_with_their_own_calibration_and_reports(  # type: ignore[no-untyped-def]
    trained_run: Path, real_fixture: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    candidate: int, keeps_scores: bool, served: int,
) -> None:
    """Views are adopted only if the scores hold; the card then describes them, else the plain graph."""
    import ml.cli
    from ml.cli import ship
    from ml.data import TEST_FILE, TRAIN_FILE
    from ml.evaluate import evaluate_real, evaluate_synthetic
    from ml.serving import WaferModel

    monkeypatch.setattr(ml.cli, "int8_earns_it", lambda fp32, int8, fp32_ms, int8_ms: False)
    monkeypatch.setattr(ml.cli, "tta_views_that_earn_it", lambda iou, ms: candidate)
    # Either way round for sure: a tiny model's scores under views move by chance.
    monkeypatch.setattr(ml.cli, "MAX_SCORE_LOSS", 1.0 if keeps_scores else -1.0)
    data = tmp_path / "data"
    data.mkdir()
    for name in (TRAIN_FILE, TEST_FILE):
        shutil.copy(real_fixture, data / name)
    model = ship(trained_run / "best.pt", tmp_path / "ship", data, synth_maps=6,
                 int8_dir=tmp_path / "int8", tta_dir=tmp_path / "tta")
    card = json.loads((model.parent / "model_card.json").read_text())
    tta = card["tta"]
    assert set(tta["val_mean_iou"]) == set(tta["ms_per_wafer_batch8"]) == {"1", "2", "4", "8"}
    assert tta["candidate_views"] == candidate and tta["views"] == served
    assert ("macro_f1" in tta) == (candidate > 1)  # one view is not re-evaluated
    assert WaferModel.load(model).tta_views == card.get("tta_views", 1) == served
    assert card["version"].endswith("-tta4") == (served == 4)
    same = json.dumps(card["eval_synthetic"], sort_keys=True)
    assert same == json.dumps(evaluate_synthetic(model, 6), sort_keys=True)
    assert card["eval_real"]["macro_f1"] == evaluate_real(model, load_npz(data / TEST_FILE), TEST_FILE)["macro_f1"]
    for name, key in (("eval_real.json", "eval_real"), ("eval_synthetic.json", "eval_synthetic")):
        on_disk = json.loads((model.parent / name).read_text())
        assert json.dumps(on_disk, sort_keys=True) == json.dumps(card[key], sort_keys=True)


def _train_one_tiny_epoch(real_fixture: Path, tmp_path: Path, *options: str) -> Path:
    """``waferstream train`` for one epoch of 16 + 16 maps with a small encoder; returns the run directory."""
    data = tmp_path / "data"
    data.mkdir()
    shutil.copy(real_fixture, data / TRAIN_FILE)
    out = tmp_path / "run"
    res = CliRunner().invoke(train_cmd, [
        "--out", str(out), "--data-dir", str(data), "--epochs", "1", "--real-per-epoch", "16",
        "--synth-per-epoch", "16", "--encoder", "tu-mobilenetv3_small_050", *options,
    ])
    assert res.exit_code == 0, res.output
    return out


def test_train_builds_the_architecture_it_is_given(real_fixture: Path, tmp_path: Path) -> None:
    """``--decoder-channels`` and ``--region-head`` reach the network, its checkpoint and its export.

    Without the input skip, so smp's own mask head is covered here and ``DieDetail`` in the next test.
    """
    import onnxruntime as ort
    import torch

    from ml.export import export_checkpoint, parity
    from ml.synth import REGION_PATTERNS
    from ml.training.train import load_checkpoint

    out = _train_one_tiny_epoch(real_fixture, tmp_path, "--decoder-channels", "24,16,12,8", "--region-head",
                                "--no-input-skip")
    net, ck = load_checkpoint(out / "last.pt")
    assert ck["config"]["model"]["decoder_channels"] == [24, 16, 12, 8]
    widths = [m.out_channels for m in net.decoder.modules() if isinstance(m, torch.nn.Conv2d)]
    assert widths[-1] == 8 and 24 in widths and 32 not in widths
    assert ck["config"]["model"]["region_head"] is True
    assert any(h["loss"].get("region", 0) > 0 for h in json.loads((out / "history.json").read_text()))
    assert net.seg_head[0].out_channels == len(PATTERNS) + len(REGION_PATTERNS)
    # The region planes are a training target only: the served graph keeps nine mask planes.
    model = export_checkpoint(out / "last.pt", tmp_path / "model")
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    x = np.zeros((1, session.get_inputs()[0].shape[1], 64, 64), np.float32)
    assert session.run(None, {session.get_inputs()[0].name: x})[0].shape == (1, len(PATTERNS), 64, 64)
    assert parity(net, model, (np.random.default_rng(0).random(x.shape) > 0.5).astype(np.float32)) < 1e-4


def test_the_input_skip_feeds_the_mask_head_and_exports(real_fixture: Path, tmp_path: Path) -> None:
    """``--input-skip``: the mask head reads the input planes at full resolution, in training and in ONNX."""
    import onnxruntime as ort
    import torch

    from ml.export import export_checkpoint, parity
    from ml.training.train import load_checkpoint

    out = _train_one_tiny_epoch(real_fixture, tmp_path, "--input-skip")
    net, ck = load_checkpoint(out / "last.pt")
    assert ck["config"]["model"]["input_skip"] is True
    assert net.seg_head is None and net.die_detail is not None
    # Die-exact: flipping one die's input changes that die's mask logits through the skip alone.
    net.eval()
    x = torch.zeros(1, net.cfg.in_channels, 64, 64)
    flipped = x.clone()
    flipped[0, :2, 30, 30] = 1.0
    decoded = net.decoder(net.encoder(x))
    delta = net.die_detail(decoded, flipped) - net.die_detail(decoded, x)
    assert delta[0, :, 30, 30].abs().sum() > 0 and delta[0, :, 20, 20].abs().sum() == 0
    model = export_checkpoint(out / "last.pt", tmp_path / "model")
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    x_np = (np.random.default_rng(0).random((2, net.cfg.in_channels, 64, 96)) > 0.5).astype(np.float32)
    assert session.run(None, {session.get_inputs()[0].name: x_np})[0].shape == (2, len(PATTERNS), 64, 96)
    assert parity(net, model, x_np) < 1e-4


@pytest.mark.parametrize("value", ["64,32,16", "64,32,16,0", "64,x,16,16"])
def test_train_rejects_bad_decoder_channels_before_loading_data(value: str, tmp_path: Path) -> None:
    res = CliRunner().invoke(train_cmd, ["--out", str(tmp_path / "run"), "--data-dir",
                                         str(tmp_path / "missing"), "--decoder-channels", value])
    assert res.exit_code == 2
    assert "expected 4 comma-separated positive widths" in res.output
    assert not (tmp_path / "run").exists()


def test_the_card_s_command_names_what_differs_from_the_defaults() -> None:
    """A model trained off the defaults must not be shipped under the defaults' command."""
    from ml.cli import REPRODUCE, reproduce_command
    from ml.training.train import TrainConfig

    default = TrainConfig()
    assert reproduce_command(default.to_dict()) == REPRODUCE
    flipped = not default.model.region_head
    longer = replace(default, max_minutes=600.0, epochs=42,
                     model=replace(default.model, region_head=flipped, decoder_channels=(96, 48, 24, 24)))
    region_flag = "--region-head" if flipped else "--no-region-head"
    assert reproduce_command(longer.to_dict()) == (
        f"{REPRODUCE} --epochs 42 --max-minutes 600 --decoder-channels 96,48,24,24 {region_flag}"
    )
    skip = not default.model.input_skip
    skip_flag = "--input-skip" if skip else "--no-input-skip"
    assert reproduce_command(replace(default, model=replace(default.model, input_skip=skip)).to_dict()) == (
        f"{REPRODUCE} {skip_flag}"
    )
    # A checkpoint from before the region planes was trained without them (v13).
    old = default.to_dict()
    del old["model"]["region_head"]  # type: ignore[attr-defined]
    without = replace(default, model=replace(default.model, region_head=False)).to_dict()
    assert reproduce_command(old) == reproduce_command(without)
    # Likewise the input skip: checkpoints from before it had none.
    old = default.to_dict()
    del old["model"]["input_skip"]  # type: ignore[attr-defined]
    without = replace(default, model=replace(default.model, input_skip=False)).to_dict()
    assert reproduce_command(old) == reproduce_command(without)
    # Every run before the precision option trained in float32; a run records what it resolved.
    no_precision = default.to_dict()
    del no_precision["precision"]
    assert reproduce_command(no_precision) == f"{REPRODUCE} --precision fp32"
    assert reproduce_command(replace(default, precision="bf16").to_dict()) == f"{REPRODUCE} --precision bf16"
    # A field no option sets is named, not silently dropped.
    assert reproduce_command(replace(default, lr=1e-3).to_dict()) == (
        f"{REPRODUCE} (plus TrainConfig changes: lr)"
    )


def test_the_shipped_card_s_command_is_the_one_its_config_derives() -> None:
    """docs/model.md's promise: the shipped card's command rebuilds the shipped config."""
    from ml.cli import reproduce_command
    from ml.serving import MODELS_DIR

    card = json.loads((MODELS_DIR / "model_card.json").read_text())
    assert card["reproduce"] == reproduce_command(card["train_config"])
