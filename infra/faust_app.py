"""The faust-streaming app factory for stateful stream processors.

faust runs on aiokafka, not confluent-kafka, so this factory is where its
configuration is derived from the same :class:`~infra.settings.Settings`
(bootstrap servers, SASL/TLS, topic prefix), where its logging goes through
structlog, and where its stream events feed the same Prometheus metric
families as the confluent-kafka services (via a faust ``Sensor``).

Development-broker notes (tansu, see stack-facts): aiokafka's idempotent
producer fails there, so ``processing_guarantee`` stays ``at_least_once`` and
every sink is idempotent; table changelog recovery is only complete with
``producer_max_batch_size=1``, which is set whenever the embedded broker is
in use (``environment != "production"``).
"""

from __future__ import annotations

from typing import Any

import faust
from faust.sensors import Sensor

from infra.logging import configure_logging
from infra.metrics import MESSAGES_CONSUMED, MESSAGES_FAILED, MESSAGES_PRODUCED
from infra.settings import Settings


class PrometheusSensor(Sensor):
    """Mirror faust's stream events into waferstream's metric families."""

    def __init__(self, service: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.service = service

    def on_message_in(self, tp: Any, offset: int, message: Any) -> None:
        MESSAGES_CONSUMED.labels(self.service, tp.topic).inc()

    def on_send_completed(self, producer: Any, state: Any, metadata: Any) -> None:
        MESSAGES_PRODUCED.labels(metadata.topic).inc()

    def on_send_error(self, producer: Any, exc: BaseException, state: Any) -> None:
        MESSAGES_FAILED.labels(self.service, "send").inc()


def _broker_credentials(settings: Settings) -> Any:
    k = settings.kafka
    if k.sasl_mechanism and k.sasl_username and k.sasl_password is not None:
        return faust.SASLCredentials(
            username=k.sasl_username,
            password=k.sasl_password.get_secret_value(),
            mechanism=k.sasl_mechanism,
        )
    return None


def create_faust_app(settings: Settings, app_id: str, **overrides: Any) -> faust.App:
    """A faust app wired to waferstream's settings, logging and metrics.

    ``app_id`` is prefixed with the topic prefix, so changelog topics and the
    consumer group are isolated per tenant/test like every other topic.
    """
    configure_logging(settings.observability)
    bootstrap = ";".join(
        f"kafka://{server.strip()}" for server in settings.kafka.bootstrap_servers.split(",")
    )
    config: dict[str, Any] = {
        "broker": bootstrap,
        "broker_credentials": _broker_credentials(settings),
        "store": "memory://",
        "processing_guarantee": "at_least_once",
        "topic_allow_declare": True,
        "topic_disable_leader": True,
        "web_enabled": False,
        "broker_session_timeout": settings.kafka.session_timeout_ms / 1000,
        "broker_commit_interval": settings.kafka.commit_interval_s,
        "consumer_auto_offset_reset": "earliest",
        "table_standby_replicas": 0,
        "loghandlers": [],
    }
    if settings.environment != "production":
        config["producer_max_batch_size"] = 1
    config.update(overrides)
    app = faust.App(f"{settings.topic_prefix}{app_id}", **config)
    app.sensors.add(PrometheusSensor(service=app_id))
    return app
