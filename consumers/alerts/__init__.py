"""Alert notifier: tells FA engineers about critical wafers and lot excursions.

Build an :class:`AlertSubject` per decoded event and call
:meth:`Notifier.handle`; call :meth:`Notifier.flush_digests` periodically.
See docs/alerts.md for the rule file and the no-spam semantics.
"""

from consumers.alerts.delivery import DeadLetter, DeadLetterHandler, RetryPolicy
from consumers.alerts.notifier import AlertOutcome, DigestOutcome, Notifier
from consumers.alerts.rules import AlertConfig, AlertConfigError, load_config, parse_config
from consumers.alerts.store import AlertRow, AlertStore
from consumers.alerts.subject import AlertSubject, Cluster, SeverityLevel

__all__ = [
    "AlertConfig",
    "AlertConfigError",
    "AlertOutcome",
    "AlertRow",
    "AlertStore",
    "AlertSubject",
    "Cluster",
    "DeadLetter",
    "DeadLetterHandler",
    "DigestOutcome",
    "Notifier",
    "RetryPolicy",
    "SeverityLevel",
    "load_config",
    "parse_config",
]
