"""JSON-over-HTTPS posting shared by the webhook and Slack channels.

Why shared: both channels differ only in the body they build; status handling,
timeouts and secret-safe error texts must be identical.
"""

from __future__ import annotations

from typing import Any

import httpx

from consumers.alerts.channels.base import DeliveryError, Redactor

#: Statuses worth retrying besides 5xx: request timeout and rate limiting.
_RETRYABLE_4XX = frozenset({408, 425, 429})


async def post_json(
    client: httpx.AsyncClient,
    url: str,
    body: dict[str, Any],
    *,
    redact: Redactor,
    headers: dict[str, str] | None = None,
    timeout_s: float,
) -> None:
    """POST ``body``; raise :class:`DeliveryError` without the URL on any failure."""
    try:
        response = await client.post(url, json=body, headers=headers, timeout=timeout_s)
    except httpx.InvalidURL as exc:
        raise DeliveryError(redact(f"InvalidURL: {exc}"), retryable=False) from None
    except httpx.HTTPError as exc:
        raise DeliveryError(redact(f"{type(exc).__name__}: {exc}")) from None
    if response.is_success:
        return
    status = response.status_code
    raise DeliveryError(
        f"HTTP {status} {response.reason_phrase}",
        retryable=status >= 500 or status in _RETRYABLE_4XX,
    )
