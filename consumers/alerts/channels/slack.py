"""Slack-compatible incoming webhook (also accepted by Mattermost and Rocket.Chat).

Why ``text`` *and* ``blocks``: ``text`` is what notifications and clients
without block support show; ``blocks`` gives the readable layout in the app.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import httpx
from pydantic import BaseModel, ConfigDict, Field, SecretStr

from consumers.alerts.channels.base import Message, Redactor
from consumers.alerts.channels.http import post_json


class SlackConfig(BaseModel):
    """The incoming-webhook URL embeds its token, hence secret."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["slack"]
    url: SecretStr
    timeout_s: float = Field(default=10.0, gt=0)


def slack_body(message: Message) -> dict[str, Any]:
    """Build the ``{"text", "blocks"}`` body Slack's incoming webhooks accept."""
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": message.headline[:150]}},
    ]
    if message.lines:
        blocks.append(
            {"type": "section", "text": {"type": "mrkdwn", "text": "\n".join(message.lines)}}
        )
    if message.link:
        blocks.append(
            {
                "type": "actions",
                "elements": [
                    {
                        "type": "button",
                        "text": {"type": "plain_text", "text": "Open in FA tools"},
                        "url": message.link,
                    }
                ],
            }
        )
    return {"text": message.text, "blocks": blocks}


class SlackChannel:
    """Posts to one incoming webhook; the webhook (a chat channel) is the recipient."""

    per_member: ClassVar[bool] = False

    def __init__(self, name: str, config: SlackConfig, client: httpx.AsyncClient) -> None:
        self.name = name
        self._config = config
        self._client = client
        self._redact = Redactor.of([config.url])

    async def send(self, message: Message, recipient: str) -> None:
        await post_json(
            self._client,
            self._config.url.get_secret_value(),
            slack_body(message),
            redact=self._redact,
            timeout_s=self._config.timeout_s,
        )

    async def aclose(self) -> None:
        """The HTTP client is shared and owned by the notifier."""
