"""Alert channels: webhook, Slack-compatible webhook and SMTP e-mail.

:func:`build_channels` turns the ``channels:`` section of the rule file into
ready :class:`Channel` objects sharing one HTTP client.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated

import httpx
from pydantic import Field

from consumers.alerts.channels.base import Channel, DeliveryError, Message, Redactor
from consumers.alerts.channels.email import EmailChannel, EmailConfig
from consumers.alerts.channels.slack import SlackChannel, SlackConfig
from consumers.alerts.channels.webhook import WebhookChannel, WebhookConfig

#: One entry of the ``channels:`` mapping, discriminated by ``type``.
ChannelConfig = Annotated[WebhookConfig | SlackConfig | EmailConfig, Field(discriminator="type")]


def build_channels(
    configs: Mapping[str, WebhookConfig | SlackConfig | EmailConfig], client: httpx.AsyncClient
) -> dict[str, Channel]:
    """Instantiate every configured channel; HTTP ones share ``client``."""
    channels: dict[str, Channel] = {}
    for name, cfg in configs.items():
        if isinstance(cfg, EmailConfig):
            channels[name] = EmailChannel(name, cfg)
        elif isinstance(cfg, SlackConfig):
            channels[name] = SlackChannel(name, cfg, client)
        else:
            channels[name] = WebhookChannel(name, cfg, client)
    return channels


__all__ = [
    "Channel",
    "ChannelConfig",
    "DeliveryError",
    "EmailChannel",
    "EmailConfig",
    "Message",
    "Redactor",
    "SlackChannel",
    "SlackConfig",
    "WebhookChannel",
    "WebhookConfig",
    "build_channels",
]
