"""A fake OpenAI REST API on loopback: chat completions (plain text, or JSON-schema
Structured Outputs) and audio transcriptions, with scriptable failures and stalls.

Requests are checked as the real API would: a strict `json_schema` response format must
have a name and a schema whose objects list every property as required and forbid
others; a violation is answered 400 and recorded in `invalid`.

    fake = FakeOpenAI().start()
    settings = settings.replace(openai_base_url=fake.base_url)
    fake.fail_next(2)           # the next two requests get 500
    fake.stall_next(1)          # the next request hangs until `release()` or `stop()`
"""
from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import gevent.event
from flask import Flask, jsonify, request
from gevent.pywsgi import WSGIServer

log = logging.getLogger("fake_openai")

DEFAULT_SUMMARY = ("דנה התקשרה כדי לקבוע תספורת. סוכם על תור ליום שלישי בעשר בבוקר. "
                   "הנציגה אישרה את התור ואמרה שתישלח תזכורת.")
DEFAULT_EXTRACTION: dict[str, Any] = {
    "caller_name": "דנה לוי", "phone": None, "service_requested": "תספורת", "city": "תל אביב",
    "preferred_datetime": "2025-02-04T10:00", "appointment_booked": True, "follow_up_needed": False,
    "urgency": "normal", "sentiment": "positive", "language": "he", "outcome": "נקבע תור ליום שלישי בעשר.",
}


@dataclass
class Recorded:
    kind: str  # summary | extraction | transcription
    path: str
    authorization: str
    body: dict[str, Any]  # JSON body, or the form fields of a transcription
    file_name: str | None = None
    file_bytes: int = 0
    status: int = 200
    t: float = field(default_factory=time.monotonic)


class FakeOpenAI:
    """Fields written by request greenlets and read by tests are guarded by `_lock`."""

    def __init__(self) -> None:
        self.summary = DEFAULT_SUMMARY
        self.extraction: dict[str, Any] = dict(DEFAULT_EXTRACTION)
        # Transcription segments by uploaded file name (e.g. "caller.wav"): [(start_s, text)].
        self.segments: dict[str, list[tuple[float, str]]] = {}
        self.transcription_has_segments = True
        # Guards: requests, invalid, _failures, _stalls. Written by request greenlets and tests.
        self._lock = threading.Lock()
        self.requests: list[Recorded] = []
        self.invalid: list[str] = []
        self._failures: list[int] = []
        self._stalls = 0
        self._released = gevent.event.Event()
        self._server: WSGIServer | None = None
        self.app = self._make_app()

    # --- scripting ----------------------------------------------------------------------

    def fail_next(self, count: int, status: int = 500) -> None:
        with self._lock:
            self._failures.extend([status] * count)

    def stall_next(self, count: int = 1) -> None:
        """The next `count` requests hang until `release()` (a worker that dies mid-request)."""
        with self._lock:
            self._stalls += count
        self._released.clear()

    def release(self) -> None:
        self._released.set()

    def recorded(self, kind: str | None = None) -> list[Recorded]:
        with self._lock:
            return [r for r in self.requests if kind is None or r.kind == kind]

    # --- lifecycle ----------------------------------------------------------------------

    def start(self) -> "FakeOpenAI":
        self._server = WSGIServer(("127.0.0.1", 0), self.app, log=None, error_log=None)
        self._server.start()
        return self

    def stop(self) -> None:
        self.release()
        if self._server is not None:
            self._server.stop(timeout=1)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_port}/v1"

    # --- the API ------------------------------------------------------------------------

    def _make_app(self) -> Flask:
        app = Flask("fake_openai")
        app.json.ensure_ascii = False

        @app.post("/v1/chat/completions")
        def chat_completions():
            body = request.get_json(force=True)
            response_format = body.get("response_format") or {}
            kind = "extraction" if response_format.get("type") == "json_schema" else "summary"
            record = self._record(kind, body)
            early = self._scripted(record)
            if early is not None:
                return early
            problem = _check_chat(body)
            if problem:
                return self._reject(record, problem)
            content = json.dumps(self.extraction, ensure_ascii=False) if kind == "extraction" else self.summary
            return jsonify({
                "id": "chatcmpl-" + uuid.uuid4().hex[:24], "object": "chat.completion", "created": int(time.time()),
                "model": body["model"],
                "choices": [{"index": 0, "finish_reason": "stop", "logprobs": None,
                             "message": {"role": "assistant", "content": content, "refusal": None}}],
                "usage": {"prompt_tokens": 300, "completion_tokens": 80, "total_tokens": 380},
            })

        @app.post("/v1/audio/transcriptions")
        def transcriptions():
            upload = request.files.get("file")
            fields = request.form.to_dict()
            record = self._record("transcription", fields, upload)
            early = self._scripted(record)
            if early is not None:
                return early
            if upload is None or not fields.get("model"):
                return self._reject(record, "file and model are required")
            segments = self.segments.get(upload.filename, [])
            text = " ".join(t for _, t in segments)
            if not self.transcription_has_segments or fields.get("response_format") != "verbose_json":
                return jsonify({"text": text})
            return jsonify({
                "task": "transcribe", "language": "hebrew", "text": text,
                "duration": segments[-1][0] + 2 if segments else 0.0,
                "segments": [{"id": i, "seek": 0, "start": start, "end": start + 1.5, "text": t, "tokens": [],
                              "temperature": 0.0, "avg_logprob": -0.2, "compression_ratio": 1.2,
                              "no_speech_prob": 0.01} for i, (start, t) in enumerate(segments)],
            })

        return app

    def _record(self, kind: str, body: dict[str, Any], upload=None) -> Recorded:
        record = Recorded(kind=kind, path=request.path, authorization=request.headers.get("Authorization", ""),
                          body=body, file_name=upload.filename if upload else None,
                          file_bytes=len(upload.read()) if upload else 0)
        with self._lock:
            self.requests.append(record)
        return record

    def _scripted(self, record: Recorded):
        with self._lock:
            stall = self._stalls > 0
            if stall:
                self._stalls -= 1
            status = self._failures.pop(0) if self._failures and not stall else None
        if stall:
            self._released.wait()
        if status is not None:
            record.status = status
            return jsonify({"error": {"message": "scripted failure", "type": "server_error", "code": None}}), status
        return None

    def _reject(self, record: Recorded, problem: str):
        with self._lock:
            self.invalid.append(problem)
        record.status = 400
        return jsonify({"error": {"message": problem, "type": "invalid_request_error", "code": None}}), 400


def _check_chat(body: dict[str, Any]) -> str | None:
    if not body.get("model") or not isinstance(body.get("messages"), list) or not body["messages"]:
        return "model and messages are required"
    response_format = body.get("response_format")
    if response_format is None or response_format.get("type") != "json_schema":
        return None
    spec = response_format.get("json_schema") or {}
    if not spec.get("name") or not isinstance(spec.get("schema"), dict):
        return "json_schema needs a name and a schema"
    if spec.get("strict"):
        return _check_strict(spec["schema"], "schema")
    return None


def _check_strict(schema: dict[str, Any], where: str) -> str | None:
    """Structured Outputs' rules for strict schemas, as far as this fake needs them."""
    types = schema.get("type")
    if types == "object" or (isinstance(types, list) and "object" in types):
        properties = schema.get("properties") or {}
        if schema.get("additionalProperties") is not False:
            return f"{where}: additionalProperties must be false"
        if set(schema.get("required") or []) != set(properties):
            return f"{where}: every property must be required"
        for name, sub in properties.items():
            problem = _check_strict(sub, f"{where}.{name}")
            if problem:
                return problem
    return None
