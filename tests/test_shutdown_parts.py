"""The shutdown's parts in one process: the budget, calls ending by themselves during the drain,
a goodbye cut by the budget, the refusal of a new stream, job workers handing back their jobs,
`python app.py` stopping the same way, and the start-up lines."""
from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from sqlalchemy import select

from services.settings import Settings, SettingsError
from services.shutdown import RESERVE_S, Shutdown, check_budget
from services.store.end_reasons import EndReason
from services.store.models import Call, Job
from tests.conftest import BUSINESS_NUMBER, CALLER_NUMBER
from tests.fakes.realtime_server import FakeRealtime, RealtimeScript, Reply
from tests.fakes.twilio_caller import FakeTwilioCall, place_call
from tests.fakes.waiting import wait_for
from tests.gunicorn_proc import free_port
from tests.test_post_call import CONVERSATION

ROOT = Path(__file__).resolve().parent.parent
GREETING = Reply("שלום, הגעתם למספרת הבדיקה", 500)


def _shutdown(h, budget_s: float | None = None) -> Shutdown:
    app = h.live.app
    return Shutdown(app.extensions["live_calls"], app.config["SETTINGS"], None, budget_s)


def _greeted(h):
    caller = h.call()
    caller.wait_heard(GREETING.audio_ms, timeout=5)
    caller.wait_quiet(100)
    return caller


def _jobs(h, call_sid: str) -> list[str]:
    with h.live.db.session() as session:
        return list(session.scalars(select(Job.kind).join(Call, Call.id == Job.call_id)
                                    .where(Call.call_sid == call_sid)))


def test_a_call_that_ends_during_the_drain_ends_its_own_way_and_a_new_stream_is_refused(make_harness):
    h = make_harness(RealtimeScript(responses=[GREETING]), shutdown_drain_s=20.0)
    caller = _greeted(h)
    shutdown = _shutdown(h)
    shutdown.begin()
    wait_for(lambda: h.live.app.extensions["live_calls"].closed, timeout=2, message="the shutdown to close the door")

    late = h.call()
    assert late.wait_closed(timeout=5) == 1001
    assert len(h.fake.connections) == 1, "no Realtime session for the refused stream"
    assert h.stored(late.call_sid).row.end_reason == EndReason.SHUTDOWN

    caller.stop()
    assert shutdown.wait(timeout=5), "the drain ends as soon as the last call has"
    stored = h.wait_ended(caller.call_sid)
    assert stored.row.end_reason == EndReason.CALLER_HANGUP
    assert len(h.fake.connections[0].client_events("response.create")) == 1, "no goodbye was asked for"


def test_a_goodbye_longer_than_the_budget_allows_is_cut_and_the_call_still_stored(make_harness):
    long_goodbye = Reply("להתראות, " * 10, 8000)
    h = make_harness(RealtimeScript(responses=[GREETING, long_goodbye]), shutdown_drain_s=30.0)
    caller = _greeted(h)
    # A budget with a second beyond the reserve: no drain, and a second for the goodbye.
    shutdown = _shutdown(h, budget_s=RESERVE_S + 1.0)
    started = time.monotonic()
    shutdown.begin()
    assert caller.wait_closed(timeout=5) == 1000
    assert shutdown.wait(timeout=5)
    assert caller.closed_at - started < 1.0 + 2.0
    assert 0 < caller.heard_ms - GREETING.audio_ms < long_goodbye.audio_ms
    stored = h.wait_ended(caller.call_sid)
    assert stored.row.end_reason == EndReason.SHUTDOWN and _jobs(h, caller.call_sid) == ["post_call"]


def test_a_quick_stop_ends_every_call_at_once_and_stores_it(make_harness):
    h = make_harness(RealtimeScript(responses=[GREETING]))
    callers = [_greeted(h), _greeted(h)]
    _shutdown(h).hurry()
    for caller in callers:
        assert caller.wait_closed(timeout=2) == 1000
        assert h.wait_ended(caller.call_sid).row.end_reason == EndReason.SHUTDOWN
        assert _jobs(h, caller.call_sid) == ["post_call"]
    assert len(h.live.app.extensions["live_calls"]) == 0


def test_a_stopping_job_worker_finishes_within_its_grace_or_hands_the_job_back_at_once(world):
    # Finishes within the grace: done by the stopping worker.
    call_sid = world.end_call(CONVERSATION)
    world.openai.stall_next(2)
    worker = world.start_worker(count=1)
    wait_for(lambda: len(world.openai.requests) == 2, 5, message="the worker to be mid-job")
    world.openai.release()
    worker.stop(grace_s=5.0)
    assert world.jobs(call_sid, "post_call")[0].status == "done"

    # Outlives the grace: given back, not counted, and taken by the next worker at once
    # (the lease is 10 s).
    call_sid = world.end_call(CONVERSATION)
    world.openai.stall_next(2)
    worker = world.start_worker(count=1)
    wait_for(lambda: len(world.openai.requests) == 4, 5, message="the worker to be mid-job")
    stopped = time.monotonic()
    worker.stop(grace_s=0.3)
    assert time.monotonic() - stopped < 2.0
    [job] = world.jobs(call_sid, "post_call")
    assert (job.status, job.attempts, job.claim_token) == ("queued", 0, None)
    world.openai.release()
    world.start_worker(count=1)
    world.wait_processed(call_sid, timeout=5)
    assert world.jobs(call_sid, "post_call")[0].attempts == 1


def test_the_drain_setting_is_read_and_checked():
    assert Settings.from_env({"SECRET_KEY": "x"}).shutdown_drain_s == 30.0
    assert Settings.from_env({"SECRET_KEY": "x", "SHUTDOWN_DRAIN_S": "0"}).shutdown_drain_s == 0.0
    for value in ("-1", "soon", "100000"):
        with pytest.raises(SettingsError, match="SHUTDOWN_DRAIN_S"):
            Settings.from_env({"SECRET_KEY": "x", "SHUTDOWN_DRAIN_S": value})


def test_start_up_says_when_a_stop_would_not_go_as_configured(caplog):
    settings = Settings.from_env({"SECRET_KEY": "x", "SHUTDOWN_DRAIN_S": "30", "CALL_MAX_DURATION_S": "20"})
    with caplog.at_level(logging.INFO, logger="shutdown"):
        check_budget(settings, 600)
        assert caplog.records == []
        check_budget(settings, 40)  # 30 s of drain and a 15 s goodbye do not fit
        [error] = caplog.records
        assert error.levelname == "ERROR" and "GRACEFUL_TIMEOUT" in error.getMessage()
        caplog.clear()
        check_budget(settings.replace(shutdown_drain_s=10.0), None)
        [warning] = caplog.records
        assert warning.levelname == "WARNING" and "outlive the shutdown drain" in warning.getMessage()


def test_python_app_py_stops_the_same_way_on_sigint(tmp_path):
    fake = FakeRealtime(RealtimeScript(responses=[GREETING, Reply("נחזור אליכם, להתראות", 700)])).start()
    port = free_port()
    env = {**os.environ, "PORT": str(port), "DATABASE_URL": f"sqlite:///{tmp_path / 'dev.db'}",
           "OPENAI_REALTIME_URL": fake.url, "OPENAI_API_KEY": "sk-dev", "SECRET_KEY": "dev-secret",
           "SHUTDOWN_DRAIN_S": "0.5", "POST_CALL_WORKERS": "0", "CALL_SILENCE_S": "120",
           "HOST": "127.0.0.1", "TWILIO_SIGNATURE_CHECK": "off"}  # as `make run`
    base = f"http://127.0.0.1:{port}"
    with open(tmp_path / "dev.log", "wb") as log:
        proc = subprocess.Popen([sys.executable, "app.py"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    caller = None
    try:
        def up() -> bool:
            try:
                return requests.get(f"{base}/healthz", timeout=0.5).ok
            except requests.RequestException:
                return proc.poll() is not None

        wait_for(up, timeout=30, message="python app.py to answer")
        created = requests.post(f"{base}/api/businesses", json={"name": "מספרת הפיתוח",
                                                               "phone_numbers": [BUSINESS_NUMBER]}, timeout=5)
        assert created.status_code == 201, created.text
        placed = place_call(base, "CAdevstop", CALLER_NUMBER, BUSINESS_NUMBER)
        caller = FakeTwilioCall(f"ws://127.0.0.1:{port}/ws/twilio-media", "CAdevstop", placed.parameters).start()
        caller.wait_heard(GREETING.audio_ms, timeout=10)
        proc.send_signal(signal.SIGINT)
        assert caller.wait_closed(timeout=10) == 1000
        assert caller.heard_ms >= GREETING.audio_ms + 700
        assert proc.wait(timeout=10) == 0
    finally:
        if caller is not None:
            caller.stop(timeout=1)
        if proc.poll() is None:
            proc.kill()
        fake.stop()
    log_text = (tmp_path / "dev.log").read_text()
    assert "end_reason=shutdown" in log_text and "Traceback" not in log_text


def test_a_business_that_asks_for_it_has_its_calls_handed_to_its_person_on_a_deploy(make_harness):
    import xml.etree.ElementTree as ET

    from prompts.tools import call_event

    notice = Reply("אני מעבירה אותך עכשיו לנציג מהעסק", 700)
    person = "+97235550000"
    h = make_harness(RealtimeScript(responses=[GREETING, notice]), shutdown_drain_s=0.0,
                     business={"transfer_number": person, "transfer_on_shutdown": True})
    caller = _greeted(h)
    shutdown = _shutdown(h)
    shutdown.begin()
    assert caller.wait_closed(timeout=8) == 1000
    assert shutdown.wait(timeout=5)
    conn = h.fake.connections[0]
    assert conn.items_created[-1]["content"][0]["text"] == call_event("Shutdown transfer")
    assert caller.heard_ms >= GREETING.audio_ms + notice.audio_ms - 40, "the notice was heard to its end"
    stored = h.wait_ended(caller.call_sid)
    assert stored.row.end_reason == EndReason.SHUTDOWN and stored.row.transfer_to == person
    root = ET.fromstring(h.stream_ended(caller.call_sid).twiml)
    assert root.find("Dial").find("Number").text == person
    assert root.find("Say") is None, "the agent already said it"
