"""What each job kind does.

`post_call`: the call's transcript (from the recording when there is one, else the live
turns) → summary and extraction → the lead → a `webhook` job when the business has a
webhook; all of it stored in the transaction that completes the job.
`webhook`: one attempt to deliver that job's event, stored whatever its outcome.
"""
from __future__ import annotations

import logging
from datetime import datetime

from sqlalchemy import select

from services.store.formats import business_zone
from services.store.models import Business, Call, WebhookDelivery, as_utc, new_webhook_secret
from services.post_call import jobs, transcript, webhook
from services.post_call.context import JobContext
from services.post_call.analysis import analyze, caller_spoke, no_conversation
from services.post_call.leads import update_lead


class LeaseLost(Exception):
    """Another worker took the job over (this one outlived its lease); its results are dropped."""


class DeliveryFailed(Exception):
    """The business's endpoint did not take the event; the job is retried."""


def run_post_call(ctx: JobContext, claim: jobs.Claim, log: logging.LoggerAdapter) -> None:
    facts = transcript.load_call(ctx.db, claim.call_id)
    if facts is None:
        log.warning("post-call job for a call that is gone")
        with ctx.db.session() as session:
            jobs.complete(session, claim)
        return
    lines = transcript.call_lines(ctx, facts, log)
    if caller_spoke(lines):
        analysis = analyze(ctx.openai, ctx.settings.post_call.model, facts.business, lines, _context(facts))
    else:
        analysis = no_conversation(facts.end_reason, facts.direction)
    with ctx.db.session() as session:
        if not jobs.complete(session, claim):
            raise LeaseLost()
        call = session.get(Call, claim.call_id)
        call.summary, call.extraction = analysis.summary, analysis.extraction
        lead = update_lead(session, call, analysis.extraction)
        business = session.get(Business, call.business_id) if call.business_id is not None else None
        if business is not None and business.webhook_url:
            if not business.webhook_secret:
                business.webhook_secret = new_webhook_secret()
            session.flush()
            jobs.enqueue(session, jobs.WEBHOOK, call.id, {"event": webhook.build_event(call, call.turns, lead)})
    log.info("call processed", extra={"model": analysis.model or "-", "lead_id": lead.id if lead else None,
                                      "lines": len(lines), "outcome": analysis.extraction["outcome"]})


def run_webhook(ctx: JobContext, claim: jobs.Claim, log: logging.LoggerAdapter) -> None:
    event = (claim.payload or {}).get("event")
    with ctx.db.session() as session:
        business = session.scalar(select(Business).join(Call, Call.business_id == Business.id)
                                  .where(Call.id == claim.call_id))
        url, secret = (business.webhook_url, business.webhook_secret) if business else (None, None)
    if not url or not secret or not event:
        log.warning("webhook job with no webhook to deliver to; dropped")
        with ctx.db.session() as session:
            jobs.complete(session, claim)
        return
    settings = ctx.settings
    attempt = webhook.post(webhook.session(settings.webhook_allow_private, settings.webhook_allow_http), url, secret, event,
                           settings.post_call.webhook_timeout_s, allow_http=settings.webhook_allow_http)
    with ctx.db.session() as session:
        session.add(WebhookDelivery(job_id=claim.job_id, call_id=claim.call_id, event_id=event["id"],
                                    attempt=claim.attempt, url=url, status_code=attempt.status_code, ok=attempt.ok,
                                    error=attempt.error, duration_ms=attempt.duration_ms))
        if attempt.ok:
            jobs.complete(session, claim)
    if not attempt.ok:
        raise DeliveryFailed(attempt.error)
    log.info("webhook delivered", extra={"event_id": event["id"], "status_code": attempt.status_code,
                                         "ms": attempt.duration_ms, "attempt": claim.attempt})


HANDLERS = {jobs.POST_CALL: run_post_call, jobs.WEBHOOK: run_webhook}


def _context(facts: transcript.CallFacts) -> str:
    """When the call was, in the business's time zone (so "tomorrow" has a date), and who called."""
    zone = business_zone(getattr(facts.business, "timezone", None))
    started: datetime = as_utc(facts.started_at).astimezone(zone)
    who = "Caller ID" if facts.direction == "inbound" else "Number called"
    return (f"Call: {facts.direction}, on {started:%Y-%m-%d} ({started:%A}) at {started:%H:%M} {zone.key} time. "
            f"{who}: {facts.caller_number or 'withheld'}.")
