"""Prometheus metrics shared by every service.

One module defines the metric families so that every consumer and producer
reports the same names and labels; ``start_metrics_server`` exposes them over
HTTP on the configured port. Lag is computed from the broker's high
watermark: the development broker (tansu) reports a watermark that is too
low when records arrive in batches, so ``waferstream_consumer_lag`` is only
trustworthy on a real Kafka cluster (it is clamped at zero here).
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, start_http_server

MESSAGES_CONSUMED = Counter(
    "waferstream_messages_consumed_total", "Records consumed", ["service", "topic"]
)
MESSAGES_PRODUCED = Counter(
    "waferstream_messages_produced_total", "Records delivered to the broker", ["topic"]
)
MESSAGES_FAILED = Counter(
    "waferstream_messages_failed_total", "Records whose processing raised", ["service", "topic"]
)
MESSAGES_DEAD_LETTERED = Counter(
    "waferstream_messages_dead_lettered_total", "Records sent to a DLQ", ["service", "topic"]
)
PROCESSING_SECONDS = Histogram(
    "waferstream_processing_seconds",
    "Time to process one micro-batch",
    ["service"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
BATCH_SIZE = Histogram(
    "waferstream_batch_size",
    "Records per micro-batch",
    ["service"],
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
)
CONSUMER_LAG = Gauge(
    "waferstream_consumer_lag", "High watermark minus position", ["service", "topic", "partition"]
)
IN_FLIGHT = Gauge("waferstream_in_flight", "Records polled but not yet committed", ["service"])
DEPENDENCY_OUTAGES = Counter(
    "waferstream_dependency_retries_total",
    "Retries caused by an unavailable dependency",
    ["service", "dependency"],
)
PAUSED = Gauge("waferstream_paused", "1 while the consumer is paused for an outage", ["service"])


def start_metrics_server(port: int) -> int:
    """Serve /metrics on ``port`` (0 = disabled). Returns the port actually used."""
    if port <= 0:
        return 0
    start_http_server(port)
    return port
