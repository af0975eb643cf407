"""/api/calls: what happened on each call, newest first, and what was done after it."""
from __future__ import annotations

import logging
from typing import Any

from flask import Blueprint, abort, request
from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from server import api_answers as answers
from server.api_schemas import CallFilter, parse
from server.request_db import request_session
from server.routes.api import auditing
from server.routes.api.principal import ensure_visible, scoped
from services.store.models import Call, Job, WebhookDelivery, iso
from services.post_call import jobs

bp = Blueprint("calls", __name__, url_prefix="/calls")
log = logging.getLogger("api")


@bp.get("")
def list_calls():
    query = parse(CallFilter, request.args.to_dict())
    stmt = scoped(select(Call), Call.business_id)
    if query.business_id is not None:
        stmt = stmt.where(Call.business_id == query.business_id)
    if query.status is not None:
        stmt = stmt.where(Call.status == query.status)
    if query.since is not None:
        stmt = stmt.where(Call.started_at >= query.since)
    stmt = stmt.order_by(Call.started_at.desc(), Call.id.desc()).limit(query.limit).offset(query.offset)
    calls = request_session().scalars(stmt)
    return {"calls": [answers.call_json(c) for c in calls], "limit": query.limit, "offset": query.offset}


@bp.get("/<call_sid>")
def get_call(call_sid: str):
    session = request_session()
    call = session.scalar(select(Call).where(Call.call_sid == call_sid).options(selectinload(Call.turns)))
    if call is None:
        abort(404, f"call {call_sid} not found")
    ensure_visible(call.business_id, f"call {call_sid} not found")
    return {**answers.call_json(call, with_turns=True), **_after_call(session, call)}


@bp.post("/<call_sid>/reprocess")
def reprocess(call_sid: str):
    """Run the post-call job again: a new summary, extraction, lead update and webhook event."""
    session = request_session()
    call = session.scalar(select(Call).where(Call.call_sid == call_sid))
    if call is None:
        abort(404, f"call {call_sid} not found")
    ensure_visible(call.business_id, f"call {call_sid} not found")
    try:
        job = jobs.reprocess(session, call)
    except jobs.CallNotEnded:
        abort(409, "the call has not ended yet")
    except jobs.JobBusy:
        abort(409, "the call is being processed right now; try again when it is done")
    auditing.note(session, "call", call_sid, call.business_id, ["post_call"], status=202)
    session.commit()
    log.info("call queued for reprocessing", extra={"call_sid": call_sid, "job_id": job.id})
    return {"call_sid": call_sid, "post_call": _job_json(job)}, 202


def _after_call(session: Session, call: Call) -> dict[str, Any]:
    rows = session.scalars(select(Job).where(Job.call_id == call.id).order_by(Job.id)).all()
    post_call = next((j for j in rows if j.kind == jobs.POST_CALL), None)
    hooks = [j for j in rows if j.kind == jobs.WEBHOOK]
    deliveries = session.scalars(select(WebhookDelivery).where(WebhookDelivery.call_id == call.id)
                                 .order_by(WebhookDelivery.id)).all()
    recording = None
    if call.recording_sid or call.recording_url:
        recording = {"sid": call.recording_sid, "status": call.recording_status, "url": call.recording_url,
                     "duration_s": call.recording_duration_s}
    return {
        "recording": recording,
        "transcript_source": "recording" if call.recording_transcript else "live",
        "recording_transcript": call.recording_transcript,
        "post_call": _job_json(post_call) if post_call else None,
        # The latest event (a reprocessed call has one per run) and every attempt of every event.
        "webhook": _webhook_json(hooks[-1], deliveries) if hooks else None,
    }


def _job_json(job: Job) -> dict[str, Any]:
    return {
        "status": job.status,
        "attempts": job.attempts,
        "next_attempt_at": iso(job.run_after) if job.status == "queued" else None,
        "last_error": job.last_error,
        "finished_at": iso(job.finished_at),
    }


def _webhook_json(job: Job, deliveries: list[WebhookDelivery]) -> dict[str, Any]:
    status = {"done": "delivered", "failed": "failed"}.get(job.status, "pending")
    if job.status == "queued" and job.attempts:
        status = "retrying"
    return {
        **_job_json(job),
        "status": status,
        "event_id": (job.payload or {}).get("event", {}).get("id"),
        "deliveries": [answers.delivery_json(d) for d in deliveries],
    }
