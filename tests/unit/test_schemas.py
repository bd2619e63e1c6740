"""Contracts: validation, die-map encoding, id safety and schema evolution."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from infra.cli import main
from schemas import compat
from schemas.catalog import AVRO_DIR, EVENT_TYPES, LOCK_FILE, SchemaCatalog
from schemas.diemap import decode_die_map, encode_die_map
from schemas.errors import InvalidEvent, SchemaViolation, UndecodableEvent
from schemas.ids import validate_id
from schemas.wire import AvroCodec
from tests.factories import sample_records


def test_every_field_of_every_schema_is_documented() -> None:
    for path in AVRO_DIR.glob("*.avsc"):
        schema = json.loads(path.read_text())
        for field in schema.get("fields", []):
            assert field.get("doc"), f"{path.name}: field {field['name']} has no doc"


def test_every_event_type_has_a_sample_and_round_trips_in_memory() -> None:
    codec = AvroCodec()
    samples = sample_records()
    assert set(samples) == set(EVENT_TYPES)
    for event_type, record in samples.items():
        payload = codec.encode(event_type, record, "topic")
        assert payload[:2] == b"\xc3\x01"
        assert codec.decode(payload, event_type)["event_id"] == record["event_id"]


def test_schema_violation_is_reported_not_encoded() -> None:
    record = sample_records()["wafer_assessed"]
    record["severity_level"] = "APOCALYPTIC"
    with pytest.raises(SchemaViolation):
        AvroCodec().encode("wafer_assessed", record, "t")


def test_payload_of_another_event_type_is_rejected() -> None:
    codec = AvroCodec()
    payload = codec.encode("lot_excursion", sample_records()["lot_excursion"], "t")
    with pytest.raises(UndecodableEvent, match="expected"):
        codec.decode(payload, "wafer_assessed")


@pytest.mark.parametrize("payload", [b"", b"garbage", b"\xc3\x01" + b"\x00" * 8 + b"x", b"\x00\x00"])
def test_garbage_is_undecodable(payload: bytes) -> None:
    with pytest.raises(UndecodableEvent):
        AvroCodec().decode(payload, "wafer_test_completed")


def test_die_map_round_trip_and_limits() -> None:
    rng = np.random.default_rng(0)
    dies = rng.integers(0, 3, size=(300, 300), dtype=np.uint8)
    record = encode_die_map(dies, hard_bins=dies.astype(np.int16) - 1)
    assert np.array_equal(decode_die_map(record), dies)
    assert len(record["codes"]) < 100_000
    with pytest.raises(InvalidEvent):
        encode_die_map(np.full((4, 4), 3, dtype=np.uint8))
    with pytest.raises(InvalidEvent):
        decode_die_map({**record, "rows": 299})


@pytest.mark.parametrize("bad", ["../../etc", "..", ".hidden", "a/b", "", "x" * 65, "lot id"])
def test_path_traversal_and_unsafe_ids_are_rejected(bad: str) -> None:
    with pytest.raises(InvalidEvent):
        validate_id(bad)


def _copy_contracts(tmp_path: Path) -> tuple[Path, Path]:
    avro = tmp_path / "avro"
    shutil.copytree(AVRO_DIR, avro)
    lock = tmp_path / "lock.json"
    shutil.copy(LOCK_FILE, lock)
    return avro, lock


def _edit(avro: Path, name: str, edit) -> None:  # type: ignore[no-untyped-def]
    path = avro / f"io.waferstream.{name}.avsc"
    schema = json.loads(path.read_text())
    edit(schema)
    path.write_text(json.dumps(schema))


def test_new_optional_field_decodes_old_payloads(tmp_path: Path) -> None:
    avro, lock = _copy_contracts(tmp_path)
    old_codec = AvroCodec(SchemaCatalog(avro, lock))
    record = sample_records()["wafer_test_completed"]
    old_payload = old_codec.encode("wafer_test_completed", record, "t")

    _edit(avro, "WaferTestCompleted", lambda s: s["fields"].append(
        {"name": "operator", "type": ["null", "string"], "default": None, "doc": "Who ran it."}))
    assert compat.check(avro, lock) == {}
    new_catalog = SchemaCatalog(avro, lock)
    assert new_catalog.current("wafer_test_completed").version == 2
    decoded = AvroCodec(new_catalog).decode(old_payload, "wafer_test_completed")
    assert decoded["operator"] is None
    assert decoded["lot_id"] == record["lot_id"]


@pytest.mark.parametrize(
    "edit, reason",
    [
        (lambda s: s["fields"].append({"name": "operator", "type": "string", "doc": "x"}),
         "new field without a default"),
        (lambda s: next(f for f in s["fields"] if f["name"] == "wafer_id").update(type="int"),
         "type changed"),
    ],
)
def test_incompatible_change_fails_the_ci_check(tmp_path: Path, edit, reason: str) -> None:  # type: ignore[no-untyped-def]
    avro, lock = _copy_contracts(tmp_path)
    _edit(avro, "WaferTestCompleted", edit)
    problems = compat.check(avro, lock)
    assert any(reason in p for p in problems["io.waferstream.WaferTestCompleted"])
    with pytest.raises(ValueError, match="incompatible"):
        compat.lock(avro, lock)


def test_ci_check_command_passes_on_the_shipped_schemas() -> None:
    result = CliRunner().invoke(main, ["schemas", "check"])
    assert result.exit_code == 0, result.output


def test_configuration_reference_is_current() -> None:
    from infra.settings import reference_markdown

    doc = (Path(__file__).resolve().parents[2] / "docs" / "configuration.md").read_text()
    assert reference_markdown() == doc, "run: waferstream config --reference > docs/configuration.md"


def test_config_command_masks_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    from infra.settings import load_settings

    monkeypatch.setenv("WAFERSTREAM_KAFKA__SASL_PASSWORD", "hunter2")
    monkeypatch.setenv("WAFERSTREAM_POSTGRES__URL", "postgresql://u:pgsecret@db/x")
    load_settings.cache_clear()
    try:
        result = CliRunner().invoke(main, ["config"])
    finally:
        load_settings.cache_clear()
    assert result.exit_code == 0
    assert "hunter2" not in result.output and "pgsecret" not in result.output
    assert json.loads(result.output)["kafka"]["sasl_password"] == "**********"
