"""A deploy's SIGTERM under gunicorn: live calls get the drain, then a goodbye each, and are
stored with end reason `shutdown` and their post-call jobs; a stream arriving meanwhile is refused."""
from __future__ import annotations

import json
import os
import signal
import socket
import time
from pathlib import Path

import pytest
import requests
import websocket
from sqlalchemy import select

from services.store.db import Database
from services.store.end_reasons import EndReason
from services.store.models import Call, Job
from tests.conftest import BUSINESS_NUMBER, CALLER_NUMBER
from tests.fakes.openai_rest import FakeOpenAI
from tests.fakes.realtime_server import FakeRealtime, RealtimeScript, Reply
from tests.fakes.twilio_caller import FakeTwilioCall, place_call
from tests.fakes.waiting import wait_for
from tests.gunicorn_proc import running_gunicorn

GREETING_MS = 600
GOODBYE_MS = 1000
GOODBYE_TEXT = "אני חייבת לסיים עכשיו, יחזרו אליכם. להתראות"
DRAIN_S = 2.0
GRACEFUL_S = 30


def process_gone(pid: int) -> bool:
    """The process has exited (a zombie until its parent reaps it counts as gone)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


class HeldConnection:
    """An HTTP/1.1 connection the worker already holds (one request answered, kept alive), so a
    websocket upgrade sent on it later reaches this worker even after its listener is closed."""

    def __init__(self, port: int):
        self.port = port
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(4096)
            assert chunk, "the connection closed before /healthz answered"
            head += chunk
        head, _, body = head.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200"), head
        length = next(int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length:"))
        while len(body) < length:
            body += self.sock.recv(4096)

    def stream(self, call_sid: str, parameters: dict[str, str]) -> int | None:
        """Open a media stream on this connection as Twilio does; the close code the server sends."""
        ws = websocket.create_connection(f"ws://127.0.0.1:{self.port}/ws/twilio-media", socket=self.sock, timeout=5)
        stream_sid = "MZ" + call_sid[2:]
        ws.send(json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}))
        ws.send(json.dumps({"event": "start", "sequenceNumber": "1", "streamSid": stream_sid, "start": {
            "streamSid": stream_sid, "accountSid": "AC" + "0" * 32, "callSid": call_sid, "tracks": ["inbound"],
            "customParameters": parameters,
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}}}))
        try:
            while True:
                frame = ws.recv_frame()
                if frame.opcode == websocket.ABNF.OPCODE_CLOSE:
                    return int.from_bytes(frame.data[:2], "big") if len(frame.data) >= 2 else None
        except (websocket.WebSocketException, OSError):
            return None
        finally:
            ws.shutdown()


@pytest.fixture
def deploy(tmp_path):
    fake = FakeRealtime(RealtimeScript(responses=[Reply("שלום, הגעתם למספרה", GREETING_MS),
                                                  Reply(GOODBYE_TEXT, GOODBYE_MS)])).start()
    openai_rest = FakeOpenAI().start()
    db_url = f"sqlite:///{tmp_path / 'shutdown.db'}"
    env = {"DATABASE_URL": db_url, "OPENAI_REALTIME_URL": fake.url, "OPENAI_API_KEY": "sk-shutdown",
           "SECRET_KEY": "shutdown-secret", "OPENAI_BASE_URL": openai_rest.base_url, "JOB_POLL_S": "0.1",
           "SHUTDOWN_DRAIN_S": str(DRAIN_S), "GRACEFUL_TIMEOUT": str(GRACEFUL_S),
           "CALL_SILENCE_S": "120",  # silent callers: no "are you still there?" during the test
           "REALTIME_POOL_SIZE": "2"}  # the production default: the stop closes what waits in it
    try:
        with running_gunicorn(tmp_path, env) as server:
            yield server, fake, Database(db_url)
    finally:
        fake.stop()
        openai_rest.stop()


def _rows(db: Database, *sids: str) -> dict[str, tuple[Call, list[str], list[str]]]:
    """Each call's row, its agent turns' texts and its jobs' kinds."""
    with db.session() as session:
        found = {}
        for sid in sids:
            call = session.scalar(select(Call).where(Call.call_sid == sid))
            found[sid] = (call, [t.text for t in call.turns if t.speaker == "agent"],
                          [job.kind for job in session.scalars(select(Job).where(Job.call_id == call.id))])
        session.expunge_all()
        return found


@pytest.mark.parametrize("target", ["master", "worker"])
def test_sigterm_lets_calls_drain_then_each_hears_a_goodbye_and_is_stored(deploy, target):
    server, fake, db = deploy
    created = requests.post(f"{server.base_url}/api/businesses", json={"name": "מספרת הפריסה",
                                                                      "phone_numbers": [BUSINESS_NUMBER]}, timeout=5)
    assert created.status_code == 201, created.text
    sids = ["CAshutdown1", "CAshutdown2"]
    callers = []
    for sid in sids:
        placed = place_call(server.base_url, sid, CALLER_NUMBER, BUSINESS_NUMBER)
        callers.append(FakeTwilioCall(server.media_url, sid, placed.parameters).start())
    late = place_call(server.base_url, "CAshutdown3", CALLER_NUMBER, BUSINESS_NUMBER)
    try:
        for caller in callers:
            caller.wait_heard(GREETING_MS, timeout=10)
            caller.wait_quiet(100)
        [worker_pid] = server.worker_pids()
        held = HeldConnection(server.port)

        signalled = time.monotonic()
        os.kill(server.pid if target == "master" else worker_pid, signal.SIGTERM)
        wait_for(lambda: "shutting down: no new calls" in server.log(), timeout=5, message="the drain to begin")
        # A stream that reaches the stopping worker is refused before any Realtime session opens,
        # and the connections opened ahead of calls are closed.
        assert held.stream("CAshutdown3", late.parameters) == 1001
        carried = fake.carried()
        assert len(carried) == 2
        wait_for(lambda: all(c.closed for c in fake.connections if c not in carried), timeout=5,
                 message="the pool's connections to close")

        for caller in callers:
            caller.wait_closed(timeout=DRAIN_S + 20)
    finally:
        for caller in callers:
            caller.stop(timeout=1)

    for caller in callers:
        # Not cut: the server closed cleanly, after the drain, once the whole goodbye was heard.
        assert caller.closed_by_server and caller.close_code == 1000
        assert caller.closed_at - signalled >= DRAIN_S
        assert caller.heard_ms >= GREETING_MS + GOODBYE_MS
        assert caller.unplayed_at_close_ms == 0
    for connection in fake.carried():
        notices = [item for item in connection.items_created if item.get("role") == "system"]
        assert any("technical reason" in part.get("text", "") for item in notices for part in item["content"])
        goodbye = connection.responses[-1]
        assert goodbye.transcript == GOODBYE_TEXT and goodbye.created_at - signalled >= DRAIN_S

    if target == "master":
        wait_for(lambda: process_gone(server.pid), timeout=10, message="gunicorn to exit")
        assert time.monotonic() - signalled < GRACEFUL_S - 5
    else:
        # The master replaces the worker; the new one takes the calls' post-call jobs.
        wait_for(lambda: server.log().count("Booting worker") == 2, timeout=20, message="the replacement worker")
        assert worker_pid not in server.worker_pids()

    rows = _rows(db, *sids, "CAshutdown3")
    for sid in sids:
        call, agent_said, jobs = rows[sid]
        assert (call.status, call.end_reason) == ("completed", EndReason.SHUTDOWN)
        assert agent_said[-1] == GOODBYE_TEXT and jobs == ["post_call"]
    refused, agent_said, jobs = rows["CAshutdown3"]
    assert refused.end_reason == EndReason.SHUTDOWN and refused.stream_sid is None
    assert agent_said == [] and jobs == []
    if target == "worker":
        def processed():
            with db.session() as session:
                return all(session.scalar(select(Job.status).join(Call, Call.id == Job.call_id)
                                          .where(Call.call_sid == sid)) == "done" for sid in sids)

        # A minute: a replacement worker boots (its imports alone take seconds on a loaded machine).
        wait_for(processed, timeout=60, message="the replacement worker to process both jobs")

    log_text = server.log()
    assert "Traceback" not in log_text and "graceful timeout" not in log_text
    assert log_text.count("a call may outlive the shutdown drain") == 1
    assert "stream refused: the server is shutting down" in log_text and "call_sid=CAshutdown3" in log_text
    db.dispose()
