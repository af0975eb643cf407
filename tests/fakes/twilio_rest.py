"""A fake Twilio REST API on loopback: records every request and answers as Twilio does.

Covers what the server uses: create a call, update a live call (TwiML or status), start a
recording. Requests must carry HTTP Basic auth whose user is the account SID in the path, as
the real API demands. `fail_next` scripts Twilio's JSON error for the next request.
"""
from __future__ import annotations

import base64
import logging
import threading
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable

from flask import Flask, jsonify, request
from gevent.pywsgi import WSGIServer

from bench.waiting import wait_for

log = logging.getLogger("fake_twilio_rest")
API = "/2010-04-01/Accounts/<account_sid>"


@dataclass
class RestRequest:
    method: str
    path: str
    account_sid: str
    auth_user: str | None
    form: dict[str, list[str]] = field(default_factory=dict)
    call_sid: str | None = None  # the call addressed (updates, recordings) or created

    def value(self, name: str) -> str | None:
        values = self.form.get(name)
        return values[0] if values else None


class FakeTwilioRest:
    def __init__(self, host: str = "127.0.0.1", port: int = 0):
        self.requests: list[RestRequest] = []
        # Guards: _failures. Tests script them; the server's handlers consume them.
        self._lock = threading.Lock()
        self._failures: list[tuple[int, int, str]] = []
        self._host, self._port = host, port
        self._server: WSGIServer | None = None
        self.app = self._make_app()

    # --- scripting and queries ---

    def fail_next(self, status: int = 400, code: int = 21211, message: str = "Invalid 'To' Phone Number") -> None:
        with self._lock:
            self._failures.append((status, code, message))

    def of(self, kind: str) -> list[RestRequest]:
        """kind: "create" (calls created), "update" (live call updates), "recording"."""
        return [r for r in self.requests if _kind(r.path) == kind]

    def wait_for(self, predicate: Callable[[], Any], timeout: float = 5.0, message: str = "condition") -> Any:
        return wait_for(predicate, timeout, message=message)

    # --- the API ---

    def _make_app(self) -> Flask:
        app = Flask("fake_twilio_rest")

        def record(account_sid: str, call_sid: str | None = None) -> tuple[RestRequest, Any]:
            entry = RestRequest(method=request.method, path=request.path, account_sid=account_sid,
                                auth_user=_basic_user(request.headers.get("Authorization")),
                                form=request.form.to_dict(flat=False), call_sid=call_sid)
            self.requests.append(entry)
            if entry.auth_user != account_sid:
                return entry, (jsonify(code=20003, message="Authenticate", status=401), 401)
            with self._lock:
                failure = self._failures.pop(0) if self._failures else None
            if failure is not None:
                status, code, message = failure
                return entry, (jsonify(code=code, message=message, status=status,
                                       more_info=f"https://www.twilio.com/docs/errors/{code}"), status)
            return entry, None

        @app.post(f"{API}/Calls.json")
        def create_call(account_sid: str):
            entry, error = record(account_sid)
            if error:
                return error
            entry.call_sid = "CA" + uuid.uuid4().hex
            return jsonify(_call(account_sid, entry.call_sid, "queued", entry)), 201

        @app.post(f"{API}/Calls/<call_sid>.json")
        def update_call(account_sid: str, call_sid: str):
            entry, error = record(account_sid, call_sid)
            if error:
                return error
            return jsonify(_call(account_sid, call_sid, entry.value("Status") or "in-progress", entry))

        @app.post(f"{API}/Calls/<call_sid>/Recordings.json")
        def start_recording(account_sid: str, call_sid: str):
            entry, error = record(account_sid, call_sid)
            if error:
                return error
            sid = "RE" + uuid.uuid4().hex
            return jsonify({"sid": sid, "account_sid": account_sid, "call_sid": call_sid, "status": "in-progress",
                            "channels": 2, "source": "StartCallRecordingAPI",
                            "uri": f"/2010-04-01/Accounts/{account_sid}/Calls/{call_sid}/Recordings/{sid}.json"}), 201

        return app

    # --- lifecycle ---

    def start(self) -> "FakeTwilioRest":
        self._server = WSGIServer((self._host, self._port), self.app, log=None, error_log=log)
        self._server.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop(timeout=1)
            self._server = None

    def __enter__(self) -> "FakeTwilioRest":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        return f"http://{self._host}:{self._server.server_port}"


def _kind(path: str) -> str:
    if path.endswith("/Recordings.json"):
        return "recording"
    return "create" if path.endswith("/Calls.json") else "update"


def _basic_user(header: str | None) -> str | None:
    if not header or not header.startswith("Basic "):
        return None
    try:
        return base64.b64decode(header[6:]).decode().partition(":")[0]
    except ValueError:
        return None


def _call(account_sid: str, call_sid: str, status: str, entry: RestRequest) -> dict:
    return {"sid": call_sid, "account_sid": account_sid, "status": status, "to": entry.value("To"),
            "from": entry.value("From"), "direction": "outbound-api", "api_version": "2010-04-01",
            "uri": f"/2010-04-01/Accounts/{account_sid}/Calls/{call_sid}.json"}
