"""A local webhook inbox for the demo and the benchmark: it stands in for the FA team.

Alerts are real HTTP deliveries from the notifier; the inbox only records
what arrived (JSON lines), so the demo can show them without any external
service.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


class WebhookInbox:
    """Accepts POSTs on ``127.0.0.1:<port>`` and appends their bodies to ``path``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.count = 0
        inbox = self

        class Handler(BaseHTTPRequestHandler):
            # HTTP/1.1 keeps the notifier's connection open between alerts, as a
            # real webhook endpoint does; http.server's default (1.0) closed it
            # after every alert, so each one paid a TCP connect in the notifier.
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802 - http.server API
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with inbox._lock:
                    inbox.count += 1
                    with open(inbox.path, "ab") as out:
                        out.write(body.replace(b"\n", b" ") + b"\n")
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                return

        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_port}/alerts"

    def __enter__(self) -> WebhookInbox:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def messages(self) -> list[dict[str, object]]:
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line]
