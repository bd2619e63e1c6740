"""Prometheus metrics of the notifier, on the default registry.

Why get-or-create: the default registry is process-global, and test runners or
``importlib.reload`` can execute this module twice; a plain ``Counter(...)``
would then raise "Duplicated timeseries". Reusing the registered collector
keeps one time series per name.
"""

from __future__ import annotations

from typing import TypeVar

from prometheus_client import REGISTRY, Counter, Histogram

_M = TypeVar("_M", Counter, Histogram)


def _get_or_create(kind: type[_M], name: str, doc: str, labels: tuple[str, ...]) -> _M:
    # prometheus_client offers no public lookup by name; this mapping is stable API in practice.
    existing = REGISTRY._names_to_collectors.get(name)
    if existing is not None:
        if not isinstance(existing, kind):
            raise TypeError(f"metric {name} already registered as {type(existing).__name__}")
        return existing
    return kind(name, doc, labels)


ALERTS_SENT = _get_or_create(
    Counter, "alerts_sent_total", "Alert and digest messages delivered.", ("channel",)
)
ALERTS_SUPPRESSED = _get_or_create(
    Counter,
    "alerts_suppressed_total",
    "Alerts not sent individually (replay, dedup, rate_limit).",
    ("reason",),
)
DELIVERY_FAILURES = _get_or_create(
    Counter,
    "alert_delivery_failures_total",
    "Messages given up on after the last retry (sent to the dead letter).",
    ("channel",),
)
DELIVERY_LATENCY = _get_or_create(
    Histogram,
    "alert_delivery_latency_seconds",
    "Time from the first attempt to a successful delivery, retries included.",
    ("channel",),
)
