"""Durable jobs: stored with the change that causes them, claimed under a lease, retried with backoff.

A claim is one UPDATE: status `running`, a fresh `claim_token`, `claimed_until` = now + lease.
It picks the oldest due job that is queued, or running with its lease run out (its worker
died or hung). On PostgreSQL the pick is `SELECT … FOR UPDATE SKIP LOCKED`, so racing
workers take different rows without waiting; on SQLite the statement holds the database's
write lock from start to end. Both re-check claimability in the UPDATE's own WHERE.

A job's results are written in the transaction that marks it done, and only while its
claim token still matches (`complete`), so a job whose lease was taken over never
completes twice: the late worker's results are rolled back.
"""
from __future__ import annotations

import random
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, or_, select, update
from sqlalchemy.orm import Session, aliased

from services.store.db import Database
from services.store.models import Call, Job, as_utc, utcnow

POST_CALL = "post_call"
WEBHOOK = "webhook"


class Postpone(Exception):
    """Raised by a handler: not yet (e.g. the recording is still on its way). Not a failed attempt."""

    def __init__(self, delay_s: float, reason: str):
        super().__init__(reason)
        self.delay_s = delay_s


class JobBusy(Exception):
    """The job is running under a live lease; it cannot be queued again now."""


class CallNotEnded(Exception):
    """A live call has no post-call work to do yet."""


@dataclass(frozen=True)
class Claim:
    job_id: int
    kind: str
    call_id: int
    token: str
    attempt: int  # 1 for the first run
    payload: dict[str, Any] | None


def enqueue(session: Session, kind: str, call_id: int, payload: dict[str, Any] | None = None) -> Job:
    job = Job(kind=kind, call_id=call_id, payload=payload, status="queued", attempts=0, run_after=utcnow())
    session.add(job)
    return job


def enqueue_post_call(session: Session, call_id: int) -> Job:
    """The call's post-call job; one per call, however often the call's end is written."""
    job = session.scalar(select(Job).where(Job.call_id == call_id, Job.kind == POST_CALL))
    return job or enqueue(session, POST_CALL, call_id)


def _claimable(job, now: datetime):
    return or_(and_(job.status == "queued", job.run_after <= now),
               and_(job.status == "running", job.claimed_until < now))


def claim_next(db: Database, lease_s: float) -> Claim | None:
    now = utcnow()
    with db.session() as session:
        # A read first: idle polls never take SQLite's write lock, which calls' writes wait on.
        if session.scalar(select(Job.id).where(_claimable(Job, now)).limit(1)) is None:
            return None
    token = secrets.token_hex(16)
    candidate = aliased(Job)
    pick = (select(candidate.id).where(_claimable(candidate, now))
            .order_by(candidate.run_after, candidate.id).limit(1)
            .with_for_update(skip_locked=True).scalar_subquery())
    stmt = (update(Job).where(Job.id == pick, _claimable(Job, now))
            .values(status="running", attempts=Job.attempts + 1, claim_token=token,
                    claimed_until=now + timedelta(seconds=lease_s))
            .returning(Job.id, Job.kind, Job.call_id, Job.attempts, Job.payload)
            .execution_options(synchronize_session=False))
    with db.session() as session:
        row = session.execute(stmt).first()
    if row is None:
        return None
    return Claim(job_id=row.id, kind=row.kind, call_id=row.call_id, token=token, attempt=row.attempts,
                 payload=row.payload)


def _settle(session: Session, claim: Claim, **values) -> bool:
    """Change the job only while `claim` still holds it."""
    result = session.execute(
        update(Job).where(Job.id == claim.job_id, Job.claim_token == claim.token, Job.status == "running")
        .values(**values).execution_options(synchronize_session=False))
    return result.rowcount == 1


def complete(session: Session, claim: Claim) -> bool:
    """Mark the job done in `session`'s transaction; False when the claim was lost (roll back then)."""
    return _settle(session, claim, status="done", claim_token=None, claimed_until=None, last_error=None,
                   finished_at=utcnow())


def backoff_s(attempt: int, base_s: float, cap_s: float) -> float:
    """The wait after failed attempt `attempt`: doubling from `base_s`, capped, with ±20% jitter
    so that jobs failing together (a receiver down) do not all come back at once."""
    return min(cap_s, base_s * 2 ** (attempt - 1)) * random.uniform(0.8, 1.2)


def fail(db: Database, claim: Claim, error: str, max_attempts: int, base_s: float, cap_s: float) -> str | None:
    """Queue the job again after its backoff, or give up after `max_attempts`.

    Returns the new status, or None when the claim was already lost.
    """
    now = utcnow()
    values: dict[str, Any] = {"claim_token": None, "claimed_until": None, "last_error": error[:2000]}
    if claim.attempt >= max_attempts:
        values.update(status="failed", finished_at=now)
    else:
        values.update(status="queued", run_after=now + timedelta(seconds=backoff_s(claim.attempt, base_s, cap_s)))
    with db.session() as session:
        return values["status"] if _settle(session, claim, **values) else None


def postpone(db: Database, claim: Claim, delay_s: float, reason: str) -> bool:
    """Run the job again later without counting this run as an attempt (it waited, it did not fail)."""
    with db.session() as session:
        return _settle(session, claim, status="queued", attempts=Job.attempts - 1, claim_token=None,
                       claimed_until=None, last_error=reason, run_after=utcnow() + timedelta(seconds=delay_s))


def release(db: Database, claim: Claim) -> bool:
    """Give the job back at once (its worker is stopping), without counting the attempt."""
    return postpone(db, claim, 0.0, "worker stopped")


def reprocess(session: Session, call: Call) -> Job:
    """The call's post-call job queued again from scratch, or for the first time (the API's and the
    console's Reprocess). CallNotEnded for a live call, JobBusy while its job runs; the caller commits."""
    if call.ended_at is None:
        raise CallNotEnded(f"call {call.call_sid} has not ended")
    job = session.scalar(select(Job).where(Job.call_id == call.id, Job.kind == POST_CALL))
    if job is None:
        return enqueue(session, POST_CALL, call.id)
    requeue(session, job)
    return job


def requeue(session: Session, job: Job) -> None:
    """Run a job again from scratch (the API's reprocess). JobBusy while it is running under a live lease."""
    now = utcnow()
    if job.status == "running" and job.claimed_until is not None and as_utc(job.claimed_until) > now:
        raise JobBusy(f"job {job.id} is running")
    job.status, job.attempts, job.run_after = "queued", 0, now
    job.claim_token = job.claimed_until = job.last_error = job.finished_at = None
