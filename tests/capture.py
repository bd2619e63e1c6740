"""Local capture servers for alert channels: a webhook receiver and an SMTP server.

Why capture servers and not mocks: the channels' real HTTP and SMTP code must
run end to end; only the far side (Slack, MES, the mail relay) is replaced.
Shared by the notifier tests and the full-pipeline test.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from tests.ports import free_port

# ---------------------------------------------------------------- HTTP capture


@dataclass(frozen=True)
class Captured:
    path: str
    headers: dict[str, str]
    body: Any
    ok: bool


@dataclass
class HttpCapture:
    """A local webhook endpoint: records requests, can fail the first N per path."""

    server: ThreadingHTTPServer
    requests: list[Captured] = field(default_factory=list)
    fail_first: dict[str, int] = field(default_factory=dict)
    status_on_fail: dict[str, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{path}"

    def received(self, path: str) -> list[Any]:
        """Bodies of the requests on ``path`` that were answered with 200."""
        with self.lock:
            return [r.body for r in self.requests if r.path == path and r.ok]

    def attempts(self, path: str) -> int:
        with self.lock:
            return sum(1 for r in self.requests if r.path == path)


def _handler(capture: HttpCapture) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            with capture.lock:
                remaining = capture.fail_first.get(self.path, 0)
                ok = remaining == 0
                if not ok:
                    capture.fail_first[self.path] = remaining - 1
                headers = {k.lower(): v for k, v in self.headers.items()}
                capture.requests.append(Captured(self.path, headers, body, ok))
            self.send_response(200 if ok else capture.status_on_fail.get(self.path, 503))
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args: Any) -> None:
            """Keep test output quiet."""

    return Handler


@pytest.fixture
def http_capture() -> Iterator[HttpCapture]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    capture = HttpCapture(server)
    server.RequestHandlerClass = _handler(capture)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield capture
    server.shutdown()
    server.server_close()


# ---------------------------------------------------------------- SMTP capture


class _SmtpHandler:
    def __init__(self) -> None:
        self.messages: list[tuple[list[str], EmailMessage]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        mail = message_from_bytes(envelope.original_content, policy=policy.default)
        self.messages.append((list(envelope.rcpt_tos), mail))  # type: ignore[arg-type]
        return "250 OK"


@dataclass
class SmtpCapture:
    port: int
    handler: _SmtpHandler

    @property
    def messages(self) -> list[tuple[list[str], EmailMessage]]:
        return self.handler.messages


@pytest.fixture
def smtp_capture() -> Iterator[SmtpCapture]:
    handler = _SmtpHandler()
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    yield SmtpCapture(port, handler)
    controller.stop()
