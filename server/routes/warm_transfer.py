"""Twilio's webhooks of a warm transfer (services/warm_transfer.py): the whisper on the person's
leg, their key, and the `<Dial>`'s end. Signed and size-limited like every webhook."""
from __future__ import annotations

import logging
from datetime import timedelta
from urllib.parse import quote

from flask import Blueprint, Response, abort, request

from server import twiml
from server.routes import webhooks as hooks
from server.stream_parameters import StreamParameters
from server.webhook_db import DatabaseUnavailable, database, store_or_keep
from services import warm_transfer
from services.store.models import utcnow

bp = Blueprint("warm_transfer", __name__)
bp.before_request(hooks._limit_body_size)
bp.before_request(hooks._check_twilio_signature)
log = logging.getLogger("webhooks")

ANSWER_PATH = "/webhook/warm_transfer/answer"
ACCEPT_TIMEOUT_S = 6  # after the summary, for the key


def _caller_call_sid() -> str:
    call_sid = (request.args.get("call") or "").strip()
    if not call_sid:
        abort(400, "the caller's call sid is required")
    return call_sid


@bp.post(hooks.WARM_WHISPER_PATH)
def whisper() -> Response:
    call_sid = _caller_call_sid()
    try:
        with database() as session:
            summary = warm_transfer.whisper_text(session, call_sid)
    except DatabaseUnavailable as exc:
        log.error("whisper without a summary: the database is unavailable", extra={"call_sid": call_sid,
                                                                                  "why": str(exc)})
        summary = warm_transfer.GENERIC_WHISPER
    log.info("warm transfer answered: whispering", extra={"call_sid": call_sid})
    action = f"{hooks._base_url()}{ANSWER_PATH}?call={quote(call_sid)}"
    return hooks._xml(twiml.whisper(summary, action_url=action, timeout_s=ACCEPT_TIMEOUT_S))


@bp.post(ANSWER_PATH)
def answer() -> Response:
    call_sid = _caller_call_sid()
    accepted = hooks._form("Digits") == warm_transfer.ACCEPT_DIGIT
    log.info("warm transfer key", extra={"call_sid": call_sid, "accepted": accepted})  # never the digits
    if not accepted:
        return hooks._xml(twiml.hangup())
    store_or_keep("transfer accepted", call_sid, lambda session: warm_transfer.accept(session, call_sid))
    return hooks._xml(twiml.empty())  # the whisper is over: Twilio bridges the two legs


@bp.post(hooks.WARM_DIAL_ENDED_PATH)
def dial_ended() -> Response:
    """Through to the person: the call ends when they part. Otherwise back to the agent, on a new stream."""
    call_sid, dial_status = hooks._form("CallSid"), hooks._form("DialCallStatus").lower()
    if not call_sid:
        abort(400, "CallSid is required")
    caller_gone = hooks._form("CallStatus").lower() == "completed"
    due_by = utcnow() + timedelta(seconds=hooks._settings().timing.stream_start_timeout_s)
    try:
        with database() as session:
            settled = warm_transfer.settle(session, call_sid, dial_status, caller_gone=caller_gone,
                                           stream_due_by=due_by)
    except DatabaseUnavailable as exc:
        log.error("warm transfer ended: the database is unavailable; the caller hears an apology",
                  extra={"call_sid": call_sid, "why": str(exc)})
        return hooks._xml(twiml.say_and_hangup(twiml.TRANSFER_FAILED))
    log.info("warm transfer ended", extra={"call_sid": call_sid, "dial_status": dial_status,
                                           "transferred": settled.transferred, "back": settled.back_to_agent})
    if not settled.back_to_agent:
        return hooks._xml(twiml.hangup())
    params = StreamParameters(call_sid=call_sid, business_id=settled.business_id, direction=settled.direction,
                              from_number=settled.from_number, to_number=settled.to_number, resumed=True)
    return hooks._xml(hooks._stream_twiml(params, due_by))
