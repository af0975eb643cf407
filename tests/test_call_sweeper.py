"""The sweeper ends the calls of a process that died carrying them, once, with their post-call job."""
import os
import socket
import subprocess
import sys
from datetime import timedelta

import gevent
import pytest

from services.call_journal import CallJournal, JournalWriter
from services.call_sweeper import CallSweeper
from services.logging_setup import call_logger
from services.store.db import Database
from services.store.models import Business, Call, Job, PhoneNumber, Turn, as_utc, utcnow
from tests.conftest import BUSINESS_NUMBER, CALLER_NUMBER
from tests.db_lock import database_locked
from tests.fakes.realtime_server import FakeRealtime, RealtimeScript, Reply
from tests.fakes.twilio_caller import FakeTwilioCall, place_call
from tests.fakes.waiting import wait_for
from tests.gunicorn_proc import running_gunicorn

HOST = socket.gethostname()


@pytest.fixture(scope="module")
def dead_pid() -> int:
    """A pid that was this host's and is no longer."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _row(db, call_sid, served_by, quiet_s, **fields):
    now = utcnow()
    fields.setdefault("answered_at", now - timedelta(seconds=(quiet_s or 0) + 60))
    with db.session() as session:
        call = Call(call_sid=call_sid, stream_sid="MZ" + call_sid, served_by=served_by, status="in-progress",
                    last_seen_at=None if quiet_s is None else now - timedelta(seconds=quiet_s), **fields)
        session.add(call)
        session.flush()
        return call.id


def _call(db, call_sid):
    with db.session() as session:
        call = session.query(Call).filter_by(call_sid=call_sid).one()
        jobs = session.query(Job).filter_by(call_id=call.id, kind="post_call").count()
        session.expunge(call)
        return call, jobs


def test_lost_calls_are_told_from_live_ones(db, dead_pid):
    writer = JournalWriter(db)
    mine = f"{HOST}:{os.getpid()}"
    _row(db, "CA-dead-pid", f"{HOST}:{dead_pid}", 300)
    _row(db, "CA-live-pid", f"{HOST}:{os.getppid()}", 300)
    _row(db, "CA-mine-carried", mine, 300)
    writer.submit("CA-mine-carried", lambda session, call: None, None, starts_call=True)
    _row(db, "CA-mine-former", mine, 300)  # this pid's, but not this process's journal's: a former one
    _row(db, "CA-far-recent", "elsewhere:7", 300)
    _row(db, "CA-far-stale", "elsewhere:7", 1200)
    _row(db, "CA-dead-pid-just-seen", f"{HOST}:{dead_pid}", 5)
    _row(db, "CA-never-stamped", f"{HOST}:{dead_pid}", None, answered_at=utcnow() - timedelta(hours=1))
    ended_id = _row(db, "CA-ended-with-job", f"{HOST}:{dead_pid}", 300, ended_at=utcnow())
    with db.session() as session:
        session.add(Job(kind="post_call", call_id=ended_id))

    swept = CallSweeper(db, writer, grace_s=60, stale_after_s=600).sweep_once()
    assert sorted(swept) == ["CA-dead-pid", "CA-far-stale", "CA-mine-former"]
    for sid in swept:
        call, jobs = _call(db, sid)
        assert call.end_reason == "process_lost" and call.status == "completed" and jobs == 1
    for sid in ("CA-live-pid", "CA-mine-carried", "CA-far-recent", "CA-dead-pid-just-seen", "CA-never-stamped"):
        call, jobs = _call(db, sid)
        assert call.ended_at is None and jobs == 0, sid
    assert CallSweeper(db, writer, grace_s=60, stale_after_s=600).sweep_once() == []


def test_a_lost_call_ends_at_its_last_sign_of_life_and_a_stored_end_is_kept(db, dead_pid):
    call_id = _row(db, "CA-talked", f"{HOST}:{dead_pid}", 300)
    last_turn = utcnow() - timedelta(seconds=200)
    with db.session() as session:
        session.add(Turn(call_id=call_id, speaker="caller", text="שלום", started_at=last_turn))
    # Twilio's status callback ended this one (the stream dropped with the process): only its job was missing.
    callback_end = utcnow() - timedelta(seconds=250)
    _row(db, "CA-callback-ended", f"{HOST}:{dead_pid}", 300, ended_at=callback_end, end_reason="caller_hangup",
         duration_s=42.0)
    assert sorted(CallSweeper(db, JournalWriter(db)).sweep_once()) == ["CA-callback-ended", "CA-talked"]
    talked, jobs = _call(db, "CA-talked")
    assert as_utc(talked.ended_at) == last_turn and jobs == 1
    assert talked.duration_s == pytest.approx(160, abs=1)
    ended, jobs = _call(db, "CA-callback-ended")
    assert as_utc(ended.ended_at) == callback_end and ended.duration_s == 42.0 and jobs == 1
    assert ended.end_reason == "process_lost"


def test_sweepers_racing_and_a_late_end_make_one_job(db, dead_pid, database_url):
    _row(db, "CA-raced", f"{HOST}:{dead_pid}", 300)
    sweepers = [CallSweeper(db, JournalWriter(db)) for _ in range(3)]
    with database_locked(database_url):
        # All three find the row (SQLite reads under the lock; PostgreSQL's wait for it) before any ends it.
        runs = [gevent.spawn(s.sweep_once) for s in sweepers]
        gevent.sleep(0.1)
        assert not any(run.ready() for run in runs)
    gevent.joinall(runs, timeout=10, raise_error=True)
    assert sum(len(run.value) for run in runs) == 1
    # The process was not lost after all (it could not reach the database): its own end wins.
    journal = CallJournal(JournalWriter(db), "CA-raced", call_logger("store", "CA-raced"))
    journal.finish("caller_goodbye", utcnow().timestamp(), {"frames_in": 5}, {}, 0.0)
    assert journal.close(timeout=5)
    call, jobs = _call(db, "CA-raced")
    assert call.end_reason == "caller_goodbye" and call.metrics == {"frames_in": 5} and jobs == 1


def test_a_call_whose_gunicorn_worker_was_killed_is_swept(tmp_path):
    """The production way: a worker killed mid-call leaves its row live; a sweeper ends it."""
    fake = FakeRealtime(RealtimeScript(responses=[Reply("שלום, הגעתם למספרה", 600)])).start()
    db_url = f"sqlite:///{tmp_path / 'sweep.db'}"
    env = {"DATABASE_URL": db_url, "OPENAI_REALTIME_URL": fake.url, "OPENAI_API_KEY": "sk-sweep",
           "SECRET_KEY": "sweep-secret", "POST_CALL_WORKERS": "0"}
    db = Database(db_url)
    try:
        with running_gunicorn(tmp_path, env) as server:
            with db.session() as session:
                business = Business(name="מספרה")
                business.phone_numbers.append(PhoneNumber(e164=BUSINESS_NUMBER))
                session.add(business)
            placed = place_call(server.base_url, "CA-killed", CALLER_NUMBER, BUSINESS_NUMBER)
            caller = FakeTwilioCall(server.media_url, "CA-killed", placed.parameters).start()
            try:
                caller.wait_heard(600, timeout=8)
                served_by = wait_for(lambda: _call(db, "CA-killed")[0].served_by, 5, message="the stream stored")
                pid = int(served_by.rpartition(":")[2])
                assert pid in server.worker_pids()
                os.kill(pid, 9)
                caller.wait_closed(timeout=5)
            finally:
                caller.stop(timeout=1)
            sweeper = CallSweeper(db, JournalWriter(db), grace_s=0)
            # Until the master has reaped the worker, its pid still answers.
            assert wait_for(sweeper.sweep_once, 10, message="the killed worker's call swept") == ["CA-killed"]
        call, jobs = _call(db, "CA-killed")
        assert call.end_reason == "process_lost" and call.ended_at is not None and jobs == 1
    finally:
        db.dispose()
        fake.stop()
