"""Generic webhook: POSTs the alert as JSON for MES, ticketing or in-house FA tools."""

from __future__ import annotations

from typing import ClassVar, Literal

import httpx
from pydantic import BaseModel, ConfigDict, Field, SecretStr

from consumers.alerts.channels.base import Message, Redactor
from consumers.alerts.channels.http import post_json


class WebhookConfig(BaseModel):
    """``url`` and ``token`` are secrets: a webhook URL often is the credential."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["webhook"]
    url: SecretStr
    token: SecretStr | None = Field(default=None, description="sent as 'Authorization: Bearer'")
    timeout_s: float = Field(default=10.0, gt=0)


class WebhookChannel:
    """Sends ``{"headline", "text", "link", ...payload}``; the endpoint is the recipient."""

    per_member: ClassVar[bool] = False

    def __init__(self, name: str, config: WebhookConfig, client: httpx.AsyncClient) -> None:
        self.name = name
        self._config = config
        self._client = client
        self._redact = Redactor.of([config.url, config.token])

    async def send(self, message: Message, recipient: str) -> None:
        headers = {}
        if self._config.token is not None:
            headers["Authorization"] = f"Bearer {self._config.token.get_secret_value()}"
        body = {
            "headline": message.headline,
            "text": message.text,
            "link": message.link,
            **message.payload,
        }
        await post_json(
            self._client,
            self._config.url.get_secret_value(),
            body,
            redact=self._redact,
            headers=headers,
            timeout_s=self._config.timeout_s,
        )

    async def aclose(self) -> None:
        """The HTTP client is shared and owned by the notifier."""
