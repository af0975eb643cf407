"""Database trouble during a call, over loopback: it never delays what the caller hears, and once
the database is back every turn is stored exactly once and the call's end comes with its job."""
import logging
import time

import gevent
import pytest
import requests
from sqlalchemy.exc import OperationalError

from server import twiml
from services.settings import Settings, SettingsError
from services.store.db import Database
from services.store.models import Business, Call, Job
from tests import databases
from tests.conftest import BUSINESS_NUMBER, CALLER_NUMBER
from tests.db_lock import database_locked
from tests.fakes.realtime_server import RealtimeScript, Reply
from tests.fakes.twilio_caller import parse_twiml, place_call
from tests.fakes.waiting import wait_for

GREETING = Reply("שלום, הגעתם למספרת הבדיקה, איך אפשר לעזור?", 800)
ANSWER = Reply("בשמחה, לאיזה יום?", 800)
ASKED = "אני רוצה לקבוע תור"


def _stored(h, call_sid):
    with h.live.db.session() as session:
        call = session.query(Call).filter_by(call_sid=call_sid).one_or_none()
        if call is None:
            return None, [], []
        jobs = [job.kind for job in session.query(Job).filter_by(call_id=call.id)]
        return call.ended_at, [(t.speaker, t.text) for t in call.turns], jobs


def test_the_answer_is_heard_while_the_database_is_locked_and_every_turn_lands_once(make_harness):
    # The second call's webhook waits out the lock here (its bound at the most allowed).
    h = make_harness(RealtimeScript(responses=[GREETING, ANSWER], caller_transcripts=[ASKED]), webhook_db_wait_s=10)
    caller = h.call()
    caller.wait_heard(GREETING.audio_ms, timeout=5)
    caller.wait_quiet(200)
    wait_for(lambda: _stored(h, caller.call_sid)[1] == [("agent", GREETING.text)], 5, message="the greeting stored")

    with database_locked(h.live.settings.database_url) as lock:
        caller.speak(600)
        # A second call rings meanwhile: its webhook's admission waits for the lock, and the call
        # under way does not wait with it.
        ringing = gevent.spawn(place_call, h.live.base_url, "CA-rings-during-the-lock", CALLER_NUMBER,
                               BUSINESS_NUMBER, timeout=60)
        caller.wait_heard(GREETING.audio_ms + ANSWER.audio_ms, timeout=5)
        assert lock.held, "the caller heard the answer while the database was locked"
        caller.wait_quiet(200)  # the answer's turn is handed to the journal once heard
        assert not ringing.ready()
        if not databases.is_postgres():  # SQLite readers read under the lock: nothing was written
            assert _stored(h, caller.call_sid)[1] == [("agent", GREETING.text)]
    caller.stop()

    def landed():
        ended_at, turns, jobs = _stored(h, caller.call_sid)
        return ended_at is not None and jobs and (turns, jobs)

    turns, jobs = wait_for(landed, 10, message="the call's end and turns once the lock is gone")
    assert turns == [("agent", GREETING.text), ("caller", ASKED), ("agent", ANSWER.text)]
    assert jobs == ["post_call"]
    assert ringing.get(timeout=10).stream_url, "the second call was admitted once the lock was gone"


sqlite_only = pytest.mark.skipif(databases.is_postgres(), reason="SQLite waits for its lock in C; PostgreSQL's "
                                                                 "driver waits on its socket, yielding")


def _add_business(db: Database, name: str) -> None:
    with db.session() as session:
        session.add(Business(name=name))


@sqlite_only
def test_a_statement_waiting_for_sqlites_lock_lets_every_other_greenlet_run(settings):
    db = Database(settings.database_url)
    db.upgrade()
    ticks = []

    def tick():
        while True:
            ticks.append(time.monotonic())
            gevent.sleep(0.005)

    ticker = gevent.spawn(tick)
    try:
        with database_locked(settings.database_url):
            writer = gevent.spawn(_add_business, db, "waits for the lock")
            before = len(ticks)
            wait_for(lambda: len(ticks) >= before + 20, 5, message="the loop to run while the insert waits")
            assert not writer.ready()
        writer.get(timeout=5)
    finally:
        ticker.kill()
    with db.session() as session:
        assert session.query(Business).filter_by(name="waits for the lock").count() == 1
    db.dispose()


@sqlite_only
def test_a_statement_gives_up_on_sqlites_lock_after_the_lock_wait(settings):
    db = Database(settings.database_url, lock_wait_s=0.2)
    db.upgrade()
    with database_locked(settings.database_url):
        started = time.monotonic()
        with pytest.raises(OperationalError, match="database is locked"):
            _add_business(db, "never")
        assert time.monotonic() - started >= 0.2
    _add_business(db, "once the lock is gone")
    db.dispose()


# The webhook's wait for the database, shortened; the lock below is held until the test lets go.
WEBHOOK_WAIT_S = 1.0
# The whole webhook's bound: the wait, a second for a connection, and room for a loaded machine.
# The lock wait of background work (15 s) is far beyond it.
ANSWERED_WITHIN_S = WEBHOOK_WAIT_S + 1.0 + 5.0


def _timed_post(url, form):
    started = time.monotonic()
    response = requests.post(url, data=form, timeout=30)
    return response, time.monotonic() - started


def test_a_call_during_a_database_outage_hears_an_apology_in_time_and_nothing_is_lost(make_harness, caplog):
    h = make_harness(webhook_db_wait_s=WEBHOOK_WAIT_S)
    base = h.live.base_url
    caplog.set_level(logging.INFO, logger="webhooks")
    form = {"CallSid": "CA-during-the-outage", "From": CALLER_NUMBER, "To": BUSINESS_NUMBER,
            "Direction": "inbound", "CallStatus": "ringing"}
    with database_locked(h.live.settings.database_url) as lock:
        answered, took = _timed_post(f"{base}/webhook/incoming_call", form)
        assert lock.held
        assert answered.status_code == 200 and answered.headers["Content-Type"].startswith("text/xml")
        placed = parse_twiml(answered.status_code, answered.text)
        assert placed.stream_url is None and placed.hangup and placed.says == (twiml.APOLOGY_UNAVAILABLE,)
        assert WEBHOOK_WAIT_S * 0.9 <= took < ANSWERED_WITHIN_S, took
        lines = [r for r in caplog.records if r.getMessage().startswith("call not answered: the database")]
        assert len(lines) == 1 and lines[0].call_sid == form["CallSid"] and lines[0].why

        # Twilio's status callback for that call does not retry an error: it is answered, and kept.
        status, took = _timed_post(f"{base}/webhook/call_status", {**form, "CallStatus": "completed",
                                                                   "CallDuration": "4"})
        assert status.status_code == 200 and took < ANSWERED_WITHIN_S, took
        # Kept after the status, so stored after the row the status creates.
        recorded, took = _timed_post(f"{base}/webhook/recording_status", {
            "CallSid": form["CallSid"], "RecordingSid": "RE1", "RecordingStatus": "completed",
            "RecordingUrl": "https://api.twilio.com/rec/RE1", "RecordingDuration": "4"})
        assert recorded.status_code == 200 and took < ANSWERED_WITHIN_S, took
        transferred, took = _timed_post(f"{base}/webhook/transfer_ended", {"CallSid": "CA-other",
                                                                           "DialCallStatus": "no-answer"})
        assert transferred.status_code == 200 and took < ANSWERED_WITHIN_S, took
        assert parse_twiml(200, transferred.text).says == (twiml.TRANSFER_FAILED,)
        ended, took = _timed_post(f"{base}/webhook/stream_ended", {"CallSid": "CA-other"})
        assert ended.status_code == 200 and took < ANSWERED_WITHIN_S, took
        after_stream = parse_twiml(200, ended.text)
        assert after_stream.hangup
        if databases.is_postgres():  # the row cannot be read: why the stream ended is unknown
            assert after_stream.says == (twiml.APOLOGY_UNAVAILABLE,)

    def stored():
        with h.live.db.session() as session:
            row = session.query(Call).filter_by(call_sid=form["CallSid"]).one_or_none()
            return row is not None and row.recording_status and (
                row.status, row.duration_s, row.business_id, row.recording_sid, row.recording_duration_s)

    assert wait_for(stored, 20, message="the kept writes to be stored") == ("completed", 4.0, h.business_id,
                                                                           "RE1", 4.0)
    again = place_call(base, "CA-after-the-outage", CALLER_NUMBER, BUSINESS_NUMBER, timeout=10)
    assert again.stream_url, again.twiml


def test_a_webhook_waits_out_a_lock_shorter_than_its_bound(make_harness):
    h = make_harness(webhook_db_wait_s=10)
    with database_locked(h.live.settings.database_url) as lock:
        ringing = gevent.spawn(place_call, h.live.base_url, "CA-short-lock", CALLER_NUMBER, BUSINESS_NUMBER,
                               timeout=30)
        gevent.sleep(2.0)  # held well past the webhook's arrival, well within its bound
        assert not ringing.ready()
        lock.release()
    assert ringing.get(timeout=30).stream_url


def test_the_webhooks_wait_for_the_database_is_read_from_the_environment():
    assert Settings.from_env({"SECRET_KEY": "x"}).webhook_db_wait_s == 3.0
    assert Settings.from_env({"SECRET_KEY": "x", "WEBHOOK_DB_WAIT_S": "1.5"}).webhook_db_wait_s == 1.5
    for bad in ("0", "soon", "-1", "60"):
        with pytest.raises(SettingsError, match="WEBHOOK_DB_WAIT_S"):
            Settings.from_env({"SECRET_KEY": "x", "WEBHOOK_DB_WAIT_S": bad})
