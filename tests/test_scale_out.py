"""Calls spread over hosts and workers (README, "Scaling out").

Two "hosts" (two gunicorn masters, one with two workers) share a database and a SECRET_KEY, as
a deployment behind a load balancer does. A call's webhook and its media stream may land on
different hosts; the call then lives in the process holding its websocket, and what the others
need to know (the call row, the limits, the live calls) is in the database.
"""
import socket

import gevent
import pytest
import requests

from services.store.db import Database
from services.store.models import Call
from tests.conftest import BUSINESS_NUMBER
from tests.fakes.realtime_server import FakeRealtime, RealtimeScript, Reply
from tests.fakes.twilio_caller import FakeTwilioCall, place_call
from tests.fakes.waiting import wait_for
from tests.gunicorn_proc import running_gunicorn

GREETING = Reply("שלום, כאן המספרה", 800)


@pytest.fixture
def two_hosts(tmp_path, database_url):
    """SQLite in the test's folder, or PostgreSQL with TEST_DATABASE_URL (as a real deployment)."""
    db = Database(database_url)
    db.upgrade()
    fake = FakeRealtime(RealtimeScript(responses=[GREETING])).start()
    env = {"DATABASE_URL": database_url, "OPENAI_REALTIME_URL": fake.url, "OPENAI_API_KEY": "sk-scale",
           "SECRET_KEY": "one-secret-for-every-host", "MAX_CONCURRENT_CALLS": "3", "POST_CALL_WORKERS": "0"}
    try:
        with running_gunicorn(tmp_path, env, workers=2, name="host-a") as host_a:
            with running_gunicorn(tmp_path, env, workers=1, name="host-b") as host_b:
                yield host_a, host_b, db
    finally:
        fake.stop()
        db.dispose()


def _rows(db: Database) -> dict[str, Call]:
    with db.session() as session:
        rows = session.query(Call).all()
        for row in rows:
            session.expunge(row)
    return {row.call_sid: row for row in rows}


def _metric(host, name: str) -> float:
    text = requests.get(f"{host.base_url}/metrics", timeout=5).text
    values = [float(line.split()[-1]) for line in text.splitlines() if line.startswith(name + " ")]
    assert len(values) == 1, f"{name} in:\n{text}"
    return values[0]


def _open(webhook_host, stream_host, call_sid: str, caller: str) -> FakeTwilioCall:
    placed = place_call(webhook_host.base_url, call_sid, caller, BUSINESS_NUMBER)
    assert placed.stream_url, placed.twiml
    return FakeTwilioCall(stream_host.media_url, call_sid, placed.parameters).start()


def test_a_call_lives_where_its_stream_landed_and_limits_count_every_host(two_hosts):
    host_a, host_b, db = two_hosts
    created = requests.post(f"{host_a.base_url}/api/businesses", timeout=5, json={
        "name": "מספרה בשני שרתים", "phone_numbers": [BUSINESS_NUMBER], "max_concurrent_calls": 10})
    assert created.status_code == 201, created.text

    # Webhook on one host, stream on the other, and both on one.
    callers = [_open(host_a, host_b, "CAscale1", "+972501111111"),
               _open(host_b, host_a, "CAscale2", "+972502222222"),
               _open(host_a, host_a, "CAscale3", "+972503333333")]
    try:
        for caller in callers:
            caller.wait_heard(GREETING.audio_ms, timeout=8)

        # MAX_CONCURRENT_CALLS counts the calls of every host: a fourth is refused wherever it lands.
        refused = place_call(host_b.base_url, "CAscale4", "+972504444444", BUSINESS_NUMBER)
        assert refused.stream_url is None and refused.hangup

        # Live state is in the database: either host lists the three live calls.
        for host in (host_a, host_b):
            live = requests.get(f"{host.base_url}/api/calls", params={"status": "in-progress"}, timeout=5).json()
            assert sorted(c["call_sid"] for c in live["calls"]) == ["CAscale1", "CAscale2", "CAscale3"]
        # A process answers for the calls it carries: host B's one worker holds CAscale1's stream.
        health_b = requests.get(f"{host_b.base_url}/healthz", timeout=5).json()
        assert health_b["active_calls"] == 1
        # /metrics sums a host's workers, whichever of them answers the scrape.
        for _ in range(4):
            assert _metric(host_a, "calls_active") == 2.0
        assert _metric(host_b, "calls_active") == 1.0

        hostname = socket.gethostname()
        (worker_b,) = [f"{hostname}:{pid}" for pid in host_b.worker_pids()]
        workers_a = {f"{hostname}:{pid}" for pid in host_a.worker_pids()}
        assert health_b["worker"] == worker_b
        served = {sid: row.served_by for sid, row in _rows(db).items()}
        assert served["CAscale1"] == worker_b
        assert served["CAscale2"] in workers_a and served["CAscale3"] in workers_a

        # A call ending on host B frees its slot for a call arriving at host A.
        callers[0].stop()
        wait_for(lambda: _rows(db)["CAscale1"].ended_at is not None, timeout=5, message="CAscale1 to end")
        callers.append(_open(host_a, host_b, "CAscale5", "+972505555555"))
        callers[-1].wait_heard(GREETING.audio_ms, timeout=8)
    finally:
        gevent.joinall([gevent.spawn(caller.stop) for caller in callers], timeout=10)

    def all_ended():
        rows = _rows(db)
        return all(rows[sid].ended_at is not None for sid in ("CAscale2", "CAscale3", "CAscale5")) and rows

    rows = wait_for(all_ended, timeout=8, message="every call row to be finished")
    assert _metric(host_a, "call_greeting_latency_seconds_count") == 2.0  # CAscale2 and 3, on either worker
    assert _metric(host_a, "calls_active") == 0.0
    assert rows["CAscale4"].end_reason == "limit"
    assert {rows[sid].end_reason for sid in ("CAscale1", "CAscale2", "CAscale3", "CAscale5")} == {"caller_hangup"}
    assert rows["CAscale5"].served_by == worker_b
    for host in (host_a, host_b):
        assert "Traceback" not in host.log() and "level=ERROR" not in host.log()
