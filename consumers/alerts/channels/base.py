"""What every channel shares: the message it is handed and how it reports failure.

Why one neutral :class:`Message`: the notifier composes the content once
(headline, lines, link, picture, machine-readable payload) and each channel
only decides how to lay it out. Why :class:`DeliveryError` carries a
``retryable`` flag: a 503 is worth retrying, a 404 (wrong URL) never will be,
and the delivery loop should not burn its budget on the latter.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

from pydantic import SecretStr


@dataclass(frozen=True)
class Message:
    """Channel-neutral content of one alert or digest."""

    headline: str
    lines: tuple[str, ...]
    payload: dict[str, Any]
    link: str | None = None
    png: bytes | None = None
    png_name: str = "wafer-map.png"

    @property
    def text(self) -> str:
        """Plain-text rendering shared by chat and e-mail bodies."""
        parts = [self.headline, *self.lines]
        if self.link:
            parts.append(f"Open in FA tools: {self.link}")
        return "\n".join(parts)


class DeliveryError(Exception):
    """A failed send. The message must already be free of secrets."""

    def __init__(self, reason: str, *, retryable: bool = True) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retryable = retryable


class Channel(Protocol):
    """A destination type. ``recipient`` is an address for e-mail, the channel name otherwise."""

    name: str
    #: True when each recipient is a person's address (e-mail), so routing must
    #: fan out over group members; False when the endpoint itself is the recipient.
    per_member: ClassVar[bool]

    async def send(self, message: Message, recipient: str) -> None:
        """Deliver once or raise :class:`DeliveryError`."""
        ...

    async def aclose(self) -> None:
        """Release connections."""
        ...


@dataclass
class Redactor:
    """Masks secret values in any text that may reach a log, a row or the DLQ.

    Why needed although secrets are ``SecretStr``: libraries put URLs in their
    exception messages (httpx does), so the raw value can leak through
    ``str(exc)`` even if our own code never prints it.
    """

    secrets: list[str] = field(default_factory=list)

    @classmethod
    def of(cls, values: Iterable[SecretStr | None]) -> Redactor:
        return cls([v.get_secret_value() for v in values if v and v.get_secret_value()])

    def __call__(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, "***")
        return text
