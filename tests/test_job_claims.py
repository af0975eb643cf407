"""Jobs survive their workers: a dead worker's job is taken over after its lease, a late
worker's results are dropped, and racing workers (greenlets and processes) never run one
job twice. On PostgreSQL (TEST_DATABASE_URL) the processes really race for rows."""
import logging
import os
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import gevent
from sqlalchemy import func, select, update

from services.store.models import Call, Job, WebhookDelivery, as_utc, utcnow
from services.post_call import jobs
from tests.fakes.waiting import wait_for
from tests.test_post_call import CONVERSATION

ROOT = Path(__file__).resolve().parent.parent


def _env(world, **extra) -> dict[str, str]:
    settings = world.live.settings
    return {**os.environ, "DATABASE_URL": settings.database_url, "OPENAI_BASE_URL": world.openai.base_url,
            "OPENAI_API_KEY": "sk-test", "SECRET_KEY": "test-secret", "JOB_POLL_S": "0.05", "JOB_BACKOFF_S": "0.05",
            "LOG_LEVEL": "WARNING", "WEBHOOK_ALLOW_HTTP": "on", "WEBHOOK_ALLOW_PRIVATE": "on",  # the loopback receiver
            **extra}


def _worker_process(world, tmp_path, name: str, **extra) -> subprocess.Popen:
    log = open(tmp_path / f"{name}.log", "wb")
    return subprocess.Popen([sys.executable, "-m", "services.post_call"], cwd=ROOT, env=_env(world, **extra),
                            stdout=log, stderr=subprocess.STDOUT)


def _all_jobs_done(world, call_sid: str, kinds: tuple[str, ...] = ("post_call", "webhook")) -> bool:
    """Every job of the call is done, one of each kind at least: no delivery can still be on its way."""
    rows = world.jobs(call_sid)
    return {j.kind for j in rows} >= set(kinds) and all(j.status == "done" for j in rows)


def test_a_job_whose_worker_process_was_killed_is_picked_up_after_its_lease(world, tmp_path):
    # The dying worker's summary and extraction requests never come back; its successor's hang
    # too until released, so the row shows the successor's claim while it runs.
    world.openai.stall_next(4)
    call_sid = world.end_call(CONVERSATION)
    proc = _worker_process(world, tmp_path, "doomed", POST_CALL_WORKERS="1", JOB_LEASE_S="4")
    try:
        wait_for(lambda: len(world.openai.requests) == 2, 60, message="the doomed worker to be mid-job")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=5)
    [job] = world.jobs(call_sid, "post_call")
    assert job.status == "running" and job.attempts == 1, "the dead worker still holds its claim"

    successor_lease = timedelta(seconds=30)
    # The successor polls while the dead worker's lease still runs (a wide margin: the kill takes
    # milliseconds), so taking the job too early is possible and would show.
    assert utcnow() < as_utc(job.claimed_until), "the lease ran out before the successor started"
    world.start_worker(lease_s=successor_lease.total_seconds())
    wait_for(lambda: len(world.openai.requests) >= 4, 10, message="the successor to be mid-job")
    [taken] = world.jobs(call_sid, "post_call")
    assert taken.status == "running" and taken.attempts == 2 and taken.claim_token != job.claim_token
    # A claim's lease ends `lease_s` after it was taken: so the takeover's moment, in the database's terms.
    taken_at = as_utc(taken.claimed_until) - successor_lease
    assert taken_at >= as_utc(job.claimed_until), "taken over before the dead worker's lease ran out"

    world.openai.release()
    call = world.wait_processed(call_sid, timeout=10)
    assert call.summary and world.jobs(call_sid, "post_call")[0].attempts == 2
    wait_for(lambda: _all_jobs_done(world, call_sid), 5, message="the call's jobs to be done")
    assert len(world.receiver.accepted()) == 1 and len(world.jobs(call_sid, "webhook")) == 1


def test_a_worker_that_outlives_its_lease_does_not_complete_the_job_a_second_time(world, caplog):
    caplog.set_level(logging.WARNING, logger="jobs")
    world.openai.stall_next(2)
    world.openai.summary = "סיכום של העובד האיטי"
    slow = world.start_worker(count=1, lease_s=0.5)
    call_sid = world.end_call(CONVERSATION)
    wait_for(lambda: len(world.openai.requests) == 2, 5, message="the slow worker to be mid-job")

    world.openai.summary = "סיכום של העובד השני"
    world.start_worker(count=1)
    wait_for(lambda: world.call(call_sid).summary == "סיכום של העובד השני", 8, message="the second worker's summary")
    world.openai.summary = "סיכום של העובד האיטי"
    world.openai.release()  # the slow worker's answers arrive now, after it lost the job
    # The slow worker got its answers and tried to settle the job: its results are dropped.
    wait_for(lambda: any("outlived its lease" in r.getMessage() for r in caplog.records if r.name == "jobs"), 5,
             message="the slow worker to find its lease lost")
    slow.stop()

    assert world.call(call_sid).summary == "סיכום של העובד השני"
    [job] = world.jobs(call_sid, "post_call")
    assert job.status == "done" and job.attempts == 2
    wait_for(lambda: _all_jobs_done(world, call_sid), 5, message="the call's jobs to be done")
    assert len(world.jobs(call_sid, "webhook")) == 1
    assert len(world.receiver.accepted()) == 1


def test_racing_processes_and_greenlets_claim_each_job_exactly_once(world):
    count = 150
    call_sid = world.end_call([])
    call_id = world.call(call_sid).id
    with world.live.db.session() as session:
        session.execute(update(Job).values(status="done"))  # the call's own post-call job is not part of the race
        for _ in range(count):
            jobs.enqueue(session, "race", call_id)
    start_at = time.time() + 3.0  # every racer is up by then
    procs = [subprocess.Popen([sys.executable, "-m", "tests.procs.claimer", world.live.settings.database_url, "4",
                               str(start_at)], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(3)]
    claimed: list[int] = []

    def race():
        gevent.sleep(max(0.0, start_at - time.time()))
        idle = 0
        while idle < 20:
            claim = jobs.claim_next(world.live.db, lease_s=600)
            if claim is None:
                idle += 1
                gevent.sleep(0.02)
                continue
            idle = 0
            claimed.append(claim.job_id)
            with world.live.db.session() as session:
                if not jobs.complete(session, claim):
                    claimed.append(-claim.job_id)

    gevent.joinall([gevent.spawn(race) for _ in range(4)], raise_error=True)
    by_process = []
    for proc in procs:
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
        by_process.append([int(line) for line in out.split()])
    every = claimed + [job_id for ids in by_process for job_id in ids]

    assert all(job_id > 0 for job_id in every), "a claimed job was completed by someone else"
    assert len(every) == len(set(every)) == count, "each job claimed exactly once"
    with world.live.db.session() as session:
        states = session.execute(select(Job.status, Job.attempts, func.count()).where(Job.kind == "race")
                                 .group_by(Job.status, Job.attempts)).all()
    assert states == [("done", 1, count)]
    assert sum(1 for ids in by_process if ids) >= 2, "the race had more than one process taking jobs"


def test_many_workers_deliver_each_call_event_exactly_once(world, tmp_path):
    calls = 24
    logs = [tmp_path / f"worker{i}.log" for i in range(2)]
    procs = [_worker_process(world, tmp_path, f"worker{i}", POST_CALL_WORKERS="3", LOG_LEVELS="jobs=INFO")
             for i in range(2)]
    try:
        wait_for(lambda: all("job workers started" in log.read_text() for log in logs), 60,
                 message="the worker processes to start")
        world.start_worker(count=3)
        sids = [world.end_call(CONVERSATION if i % 3 == 0 else []) for i in range(calls)]
        wait_for(lambda: len(world.receiver.accepted()) >= calls, 30, message="every call's event")
        wait_for(lambda: all(_all_jobs_done(world, sid) for sid in sids), 15, message="every job to be done")
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            proc.wait(timeout=10)
    world.workers[-1].stop()  # with every worker stopped, nothing more can be delivered
    events = [r.event["call"]["call_sid"] for r in world.receiver.received]
    assert sorted(events) == sorted(sids), "one event per call, none twice"
    with world.live.db.session() as session:
        assert session.scalar(select(func.count()).select_from(WebhookDelivery)) == calls
        attempts = session.scalars(select(Job.attempts).join(Call, Call.id == Job.call_id)).all()
    assert attempts == [1] * (2 * calls)
    texts = [log.read_text() for log in logs]
    assert not any("Traceback" in text for text in texts)
    assert sum(text.count("webhook delivered") for text in texts) > 0, "the other processes took part"
