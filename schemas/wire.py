"""Avro wire formats: Confluent Schema Registry framing and Avro single-object encoding.

Writers use the Confluent format (magic byte 0 + 4-byte schema id) when a
Schema Registry URL is configured, registering the self-contained schema under
the ``<topic>-value`` subject through confluent-kafka's registry client; with
no registry they use Avro single-object encoding (``C3 01`` + 8-byte
CRC-64-AVRO fingerprint), resolved against the schemas shipped in
``schemas/``. Readers accept both, so a fleet can move between the two
without a flag day.

Decoding always resolves the writer schema against the *current* reader
schema, so old payloads gain the defaults of fields added since.
"""

from __future__ import annotations

import io
import json
import struct
from functools import lru_cache
from typing import Any

import fastavro
import fastavro.validation

from schemas.catalog import SchemaCatalog, SchemaVersion, default_catalog
from schemas.errors import SchemaViolation, UndecodableEvent

SINGLE_OBJECT_MAGIC = b"\xc3\x01"
CONFLUENT_MAGIC = b"\x00"


class AvroCodec:
    """Encode and decode event dicts; one instance per process is enough."""

    def __init__(
        self,
        catalog: SchemaCatalog | None = None,
        registry_url: str = "",
        registry_auth: str | None = None,
    ) -> None:
        self.catalog = catalog or default_catalog()
        self._registry: Any = None
        if registry_url:
            from confluent_kafka.schema_registry import SchemaRegistryClient

            conf: dict[str, str] = {"url": registry_url}
            if registry_auth:
                conf["basic.auth.user.info"] = registry_auth
            # new_client() returns the in-process mock for mock:// URLs (tests, demos).
            self._registry = SchemaRegistryClient.new_client(conf)
        self._ids: dict[tuple[str, str], int] = {}
        self._writers_by_id: dict[int, Any] = {}

    def encode(self, event_type: str, record: dict[str, Any], topic: str) -> bytes:
        """Validate ``record`` against the current schema and frame it for ``topic``."""
        schema = self.catalog.current(event_type)
        record = {**record, "schema_version": schema.version}
        body = io.BytesIO()
        try:
            fastavro.schemaless_writer(body, schema.codec_schema, record)
        except (TypeError, ValueError, KeyError, AttributeError, OverflowError) as exc:
            # The writer fails fast but tersely; the validator says which field is wrong.
            # Running it only on failure keeps it off the hot path.
            raise SchemaViolation(f"{schema.full_name}: {self._explain(record, schema)}") from exc
        if self._registry is None:
            return SINGLE_OBJECT_MAGIC + schema.fingerprint + body.getvalue()
        schema_id = self._schema_id(schema, topic)
        return CONFLUENT_MAGIC + struct.pack(">I", schema_id) + body.getvalue()

    @staticmethod
    def _explain(record: dict[str, Any], schema: SchemaVersion) -> str:
        try:
            fastavro.validation.validate(record, schema.parsed, raise_errors=True)
        except fastavro.validation.ValidationError as exc:
            return str(exc)
        return "record does not match the schema"

    def decode(self, payload: bytes | None, event_type: str) -> dict[str, Any]:
        """Decode a payload in either wire format into a dict of the current schema."""
        reader = self.catalog.current(event_type)
        if not payload:
            raise UndecodableEvent("empty payload")
        if payload[:2] == SINGLE_OBJECT_MAGIC and len(payload) >= 10:
            version = self.catalog.by_fingerprint(payload[2:10])
            if version is None:
                raise UndecodableEvent(f"unknown schema fingerprint {payload[2:10].hex()}")
            if version.full_name != reader.full_name:
                raise UndecodableEvent(
                    f"payload is a {version.full_name}, expected {reader.full_name}"
                )
            return self._read(payload[10:], version.codec_schema, reader)
        if payload[:1] == CONFLUENT_MAGIC and len(payload) >= 5:
            (schema_id,) = struct.unpack(">I", payload[1:5])
            return self._read(payload[5:], self._writer_by_id(schema_id), reader)
        raise UndecodableEvent(f"unknown wire format (first bytes {payload[:4].hex()})")

    def _read(self, body: bytes, writer: Any, reader: SchemaVersion) -> dict[str, Any]:
        stream = io.BytesIO(body)
        try:
            record: dict[str, Any] = fastavro.schemaless_reader(stream, writer, reader.codec_schema)
        except Exception as exc:  # fastavro raises many types on garbage input
            raise UndecodableEvent(f"{reader.full_name}: {type(exc).__name__}: {exc}") from exc
        if stream.tell() != len(body):
            raise UndecodableEvent(
                f"{reader.full_name}: {len(body) - stream.tell()} trailing bytes after the record"
            )
        return record

    def _schema_id(self, schema: SchemaVersion, topic: str) -> int:
        key = (topic, schema.canonical)
        if key not in self._ids:
            from confluent_kafka.schema_registry import Schema

            expanded = json.dumps(fastavro.schema.expand_schema(schema.parsed))
            registered = self._registry.register_schema(f"{topic}-value", Schema(expanded, "AVRO"))
            self._ids[key] = registered if isinstance(registered, int) else registered.schema_id
        return self._ids[key]

    def _writer_by_id(self, schema_id: int) -> Any:
        if schema_id not in self._writers_by_id:
            if self._registry is None:
                raise UndecodableEvent(
                    f"Confluent-framed payload (schema id {schema_id}) but no registry configured"
                )
            from confluent_kafka.schema_registry.error import SchemaRegistryError

            try:
                registered = self._registry.get_schema(schema_id)
            except SchemaRegistryError as exc:
                if exc.http_status_code == 404:
                    raise UndecodableEvent(f"schema id {schema_id} not in registry") from exc
                # Anything else is the registry being unwell: retryable, not poison.
                raise ConnectionError(f"schema registry unavailable: {exc}") from exc
            self._writers_by_id[schema_id] = fastavro.parse_schema(json.loads(registered.schema_str))
        return self._writers_by_id[schema_id]


@lru_cache(maxsize=8)
def shared_codec(registry_url: str = "", registry_auth: str | None = None) -> AvroCodec:
    """One codec (and registry client, with its schema cache) per process and registry."""
    return AvroCodec(registry_url=registry_url, registry_auth=registry_auth)
