"""A business's webhook endpoint on loopback: verifies each request's signature the way the
webhook docs tell a business to (written here independently of the server's code), records
it, and answers with scripted status codes (200 once the script runs out)."""
from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from dataclasses import dataclass
from typing import Any

from flask import Flask, request
from gevent.pywsgi import WSGIServer


@dataclass(frozen=True)
class Received:
    event: dict[str, Any]
    headers: dict[str, str]
    signature_ok: bool
    status: int


class WebhookReceiver:
    def __init__(self, secret: str = ""):
        self.secret = secret
        # Guards: received, _statuses. Written by request greenlets, read by the test.
        self._lock = threading.Lock()
        self.received: list[Received] = []
        self._statuses: list[int] = []
        self._server: WSGIServer | None = None
        app = Flask("webhook_receiver")
        app.add_url_rule("/hooks/calls", "hook", self._hook, methods=["POST"])
        self.app = app

    def answer_next(self, *statuses: int) -> None:
        with self._lock:
            self._statuses.extend(statuses)

    def accepted(self) -> list[Received]:
        """Requests that were signed right and answered 2xx: what the business's system took in."""
        with self._lock:
            return [r for r in self.received if r.signature_ok and 200 <= r.status < 300]

    def start(self) -> "WebhookReceiver":
        self._server = WSGIServer(("127.0.0.1", 0), self.app, log=None, error_log=None)
        self._server.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop(timeout=1)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_port}/hooks/calls"

    def _hook(self):
        body = request.get_data()
        timestamp = request.headers.get("X-Agent-Timestamp", "")
        expected = "sha256=" + hmac.new(self.secret.encode(), timestamp.encode() + b"." + body,
                                        hashlib.sha256).hexdigest()
        signature_ok = (timestamp.isdigit() and abs(time.time() - int(timestamp)) < 300
                        and hmac.compare_digest(expected, request.headers.get("X-Agent-Signature", "")))
        with self._lock:
            status = self._statuses.pop(0) if self._statuses else 200
            if not signature_ok:
                status = 401
            self.received.append(Received(json.loads(body), dict(request.headers), signature_ok, status))
        return ("ok" if status < 300 else "no"), status
