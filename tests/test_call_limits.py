"""Concurrent call limits: per business and per server, agreed on by every worker through the database."""
import xml.etree.ElementTree as ET
from datetime import timedelta

import gevent
import pytest
import requests

from services.store.db import Database
from services.store.models import Call, utcnow
from tests.conftest import BUSINESS_NUMBER, CALLER_NUMBER, add_business
from tests.fakes.realtime_server import RealtimeScript, Reply
from tests.fakes.twilio_caller import place_call
from tests.gunicorn_proc import running_gunicorn

GREETING = Reply("שלום, הגעתם למספרת הבדיקה", 600)


def _is_busy_message(placed) -> bool:
    return placed.stream_url is None and placed.hangup and len(placed.says) == 1 and "תפוסים" in placed.says[0]


def test_over_the_business_limit_the_caller_hears_a_busy_message_and_the_attempt_is_stored(make_harness):
    h = make_harness(RealtimeScript(responses=[GREETING]), business={"max_concurrent_calls": 2})
    first, second = h.call(), h.call()
    for caller in (first, second):
        caller.wait_heard(GREETING.audio_ms, timeout=5)
    refused_sid, refused = h.place()
    assert _is_busy_message(refused), refused.twiml
    stored = h.stored(refused_sid).row
    assert (stored.end_reason, stored.status) == ("limit", "completed") and stored.ended_at is not None

    # A retried webhook is refused again, and does not take a slot.
    assert _is_busy_message(h.place(refused_sid)[1])
    first.stop()
    h.wait_ended(first.call_sid)
    third = h.call()
    third.wait_heard(GREETING.audio_ms, timeout=5)
    assert second.clears == [] and not second.closed


def test_the_server_limit_counts_every_business(make_harness):
    h = make_harness(RealtimeScript(responses=[GREETING]), max_concurrent_calls=2)
    other = "+972300000002"
    add_business(h.live, number=other, name="עסק שני")
    h.call().wait_heard(300, timeout=5)
    assert place_call(h.live.base_url, "CAother1", CALLER_NUMBER, other).stream_url
    refused = place_call(h.live.base_url, "CAother2", CALLER_NUMBER, other)
    assert _is_busy_message(refused)
    assert h.stored("CAother2").row.end_reason == "limit"


def test_simultaneous_calls_never_get_more_slots_than_the_limit(make_harness):
    # On PostgreSQL the driver yields to other greenlets mid-transaction: without the lock, two
    # webhooks would count the same live calls and both take the last slot.
    h = make_harness(business={"max_concurrent_calls": 3})
    jobs = [gevent.spawn(h.place) for _ in range(12)]
    gevent.joinall(jobs, timeout=20, raise_error=True)
    placed = [job.value[1] for job in jobs]
    assert sum(1 for p in placed if p.stream_url) == 3
    assert sum(1 for p in placed if _is_busy_message(p)) == 9


def test_a_status_callback_frees_a_slot_whose_stream_never_opened(make_harness):
    h = make_harness(business={"max_concurrent_calls": 1})
    admitted_sid, admitted = h.place()
    assert admitted.stream_url
    assert _is_busy_message(h.place()[1])
    requests.post(f"{h.live.base_url}/webhook/call_status", data={"CallSid": admitted_sid, "CallStatus": "failed"},
                  timeout=5)
    assert h.place()[1].stream_url


def test_a_call_left_live_by_a_crashed_worker_stops_counting_after_the_longest_call(make_harness):
    h = make_harness(business={"max_concurrent_calls": 1})
    timing = h.live.settings.timing
    longest = timedelta(seconds=timing.max_call_s + timing.stale_call_margin_s)
    with h.live.db.session() as session:
        session.add(Call(call_sid="CAcrashed", business_id=h.business_id, status="in-progress",
                         started_at=utcnow() - longest + timedelta(seconds=60)))
    assert _is_busy_message(h.place()[1]), "within the longest call it still takes the slot"
    with h.live.db.session() as session:
        session.query(Call).filter_by(call_sid="CAcrashed").one().started_at = utcnow() - longest - timedelta(seconds=5)
    assert h.place()[1].stream_url


@pytest.fixture
def two_workers(tmp_path, database_url):
    db = Database(database_url)
    db.upgrade()
    db.dispose()
    env = {"DATABASE_URL": database_url, "OPENAI_API_KEY": "sk-limits", "SECRET_KEY": "limits-secret",
           "MAX_CONCURRENT_CALLS": "3"}
    with running_gunicorn(tmp_path, env, workers=2) as server:
        yield server.base_url, server.log_path


def test_limits_hold_across_two_gunicorn_workers_under_simultaneous_calls(two_workers):
    base, log_path = two_workers
    small, large = BUSINESS_NUMBER, "+972300000002"
    for name, number, limit in (("קטן", small, 2), ("גדול", large, 10)):
        created = requests.post(f"{base}/api/businesses", json={"name": name, "phone_numbers": [number],
                                                               "max_concurrent_calls": limit}, timeout=5)
        assert created.status_code == 201, created.text
    attempts = [(f"CAsmall{i}", small) for i in range(20)] + [(f"CAlarge{i}", large) for i in range(20)]
    jobs = [gevent.spawn(place_call, base, sid, CALLER_NUMBER, number) for sid, number in attempts]
    gevent.joinall(jobs, timeout=20, raise_error=True)
    answers = {sid: job.value for (sid, _), job in zip(attempts, jobs)}
    admitted = {sid for sid, placed in answers.items() if placed.stream_url}
    assert all(_is_busy_message(placed) for sid, placed in answers.items() if sid not in admitted)
    assert len(admitted) == 3, "MAX_CONCURRENT_CALLS=3 across both workers"
    assert len({sid for sid in admitted if sid.startswith("CAsmall")}) <= 2, "the small business's own limit"
    refused = requests.get(f"{base}/api/calls", params={"status": "completed"}, timeout=5).json()["calls"]
    assert sorted(c["call_sid"] for c in refused if c["end_reason"] == "limit") == sorted(set(answers) - admitted)
    assert ET.fromstring(answers[next(iter(admitted))].twiml).find("Connect/Stream") is not None
    assert "Traceback" not in log_path.read_text(errors="replace")
