"""SMTP e-mail with the wafer map attached, for FA engineers' inboxes.

Why stdlib ``smtplib`` in a worker thread: it is battle-tested, needs no extra
dependency, and one short blocking session per mail is cheap off the event
loop. A fresh connection per message avoids managing stale SMTP sessions.
"""

from __future__ import annotations

import asyncio
import smtplib
import ssl
from email.message import EmailMessage
from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from consumers.alerts.channels.base import DeliveryError, Message, Redactor


class EmailConfig(BaseModel):
    """SMTP relay settings. ``security``: plain, STARTTLS upgrade, or implicit TLS."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["email"]
    host: str
    port: int = Field(default=587, gt=0, lt=65536)
    security: Literal["none", "starttls", "tls"] = "starttls"
    username: str | None = None
    password: SecretStr | None = None
    sender: str
    subject_prefix: str = "[waferstream]"
    timeout_s: float = Field(default=10.0, gt=0)


def build_email(config: EmailConfig, message: Message, recipient: str) -> EmailMessage:
    """Compose the MIME message: plain-text body plus the PNG map as an attachment."""
    mail = EmailMessage()
    mail["From"] = config.sender
    mail["To"] = recipient
    mail["Subject"] = f"{config.subject_prefix} {message.headline}".strip()
    mail.set_content(message.text)
    if message.png is not None:
        mail.add_attachment(message.png, maintype="image", subtype="png", filename=message.png_name)
    return mail


class EmailChannel:
    """One e-mail per member address; the address is the recipient."""

    per_member: ClassVar[bool] = True

    def __init__(self, name: str, config: EmailConfig) -> None:
        self.name = name
        self._config = config
        self._redact = Redactor.of([config.password])

    async def send(self, message: Message, recipient: str) -> None:
        mail = build_email(self._config, message, recipient)
        try:
            await asyncio.to_thread(self._send_blocking, mail)
        except smtplib.SMTPResponseException as exc:
            # 5xx replies are permanent (bad address, policy); 4xx are transient.
            raise DeliveryError(
                self._redact(f"SMTP {exc.smtp_code}: {exc.smtp_error!r}"),
                retryable=exc.smtp_code < 500,
            ) from None
        except (smtplib.SMTPException, OSError) as exc:
            raise DeliveryError(self._redact(f"{type(exc).__name__}: {exc}")) from None

    def _send_blocking(self, mail: EmailMessage) -> None:
        cfg = self._config
        smtp_cls = smtplib.SMTP_SSL if cfg.security == "tls" else smtplib.SMTP
        with smtp_cls(cfg.host, cfg.port, timeout=cfg.timeout_s) as smtp:
            if cfg.security == "starttls":
                smtp.starttls(context=ssl.create_default_context())
            if cfg.username and cfg.password is not None:
                smtp.login(cfg.username, cfg.password.get_secret_value())
            smtp.send_message(mail)

    async def aclose(self) -> None:
        """Nothing is held between messages."""
