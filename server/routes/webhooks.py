"""Twilio's webhooks at the paths the original deployment used."""
from __future__ import annotations

import logging
from datetime import datetime
from urllib.parse import quote, urlsplit

import gevent
from flask import Blueprint, Response, abort, current_app, request
from sqlalchemy.orm import Session

from server import twiml
from services.store.call_records import KNOWN_STATUSES, answering_business, apply_status, business_for_number, open_call
from server.request_db import get_db
from services.store import end_reasons
from services.store.end_reasons import EndReason
from services.store.models import Call
from server.security import (NO_TOKEN_HINT, SIGNATURE_CHECK_OFF_WARNING, StreamToken, signed_url,
                             twilio_signature_valid)
from server.stream_parameters import MEDIA_PATH, StreamParameters
from server.webhook_db import DatabaseUnavailable, bounded_session, database, store_or_keep, within_bound
from services import metrics, voicemail, warm_transfer
from services.call_limits import CallLimits
from services.logging_setup import mask_number
from services.post_call import recording
from services.twilio_rest import TwilioNotConfigured, TwilioRest, TwilioRestError

bp = Blueprint("webhooks", __name__)
log = logging.getLogger("webhooks")

def _settings():
    return current_app.config["SETTINGS"]


@bp.record_once
def _warn_when_unchecked(state) -> None:
    if state.app.config["SETTINGS"].unsigned_twilio_allowed:
        log.warning(SIGNATURE_CHECK_OFF_WARNING)


# A warm transfer's webhooks (server/routes/warm_transfer.py): the whisper and the <Dial>'s end.
WARM_WHISPER_PATH = "/webhook/warm_transfer/whisper"
WARM_DIAL_ENDED_PATH = "/webhook/warm_transfer/dial_ended"

# Twilio's webhook forms are a few kilobytes.
MAX_WEBHOOK_BODY = 64 << 10


@bp.before_request
def _limit_body_size() -> None:
    """Before the signature check reads the form: a body over the limit is a 413, never parsed."""
    if request.content_length is not None and request.content_length > MAX_WEBHOOK_BODY:
        abort(413, "the body is too large")
    request.max_content_length = MAX_WEBHOOK_BODY  # a body without a length stops at the limit too


@bp.before_request
def _check_twilio_signature() -> None:
    settings = _settings()
    if not settings.twilio_auth_token:
        if settings.unsigned_twilio_allowed:
            return
        # Closed by default: nothing to check the signature with is no reason to let it in.
        log.warning(f"rejected webhook: no TWILIO_AUTH_TOKEN; {NO_TOKEN_HINT}", extra={"path": request.path})
        abort(403, f"Twilio signature checking is not configured: {NO_TOKEN_HINT}")
    url = signed_url(settings.public_base_url, request.url, request.full_path)
    if not twilio_signature_valid(settings.twilio_auth_token, url, request.form.to_dict(),
                                  request.headers.get("X-Twilio-Signature")):
        log.warning("rejected webhook: bad or missing X-Twilio-Signature", extra={"path": request.path, "url": url})
        abort(403, "invalid Twilio signature")


def _xml(body: str) -> Response:
    return Response(body, mimetype="text/xml")


_warned_host_from_request = False


def _base_url() -> str:
    global _warned_host_from_request
    if _settings().public_base_url:
        return _settings().public_base_url
    if not _warned_host_from_request:
        # The Host header is the caller's to choose: fine in development, not facing the internet.
        _warned_host_from_request = True
        log.warning("PUBLIC_BASE_URL is not set: the TwiML's addresses come from the request's Host header")
    return request.host_url.rstrip("/")


def _stream_twiml(params: StreamParameters, stream_due_by: datetime) -> str:
    settings = _settings()
    base = _base_url()
    host = urlsplit(base).netloc
    # Expires when the call's row says its stream is due: no stream starts after the call's slot
    # has been given up (services/call_limits.py).
    token = StreamToken(settings.secret_key).issue_until(params.signed_text(), stream_due_by.timestamp())
    return twiml.connect_stream(
        action_url=f"{base}/webhook/stream_ended",
        stream_url=f"wss://{host}{MEDIA_PATH}",
        status_url=f"{base}/webhook/stream_status",
        parameters=params.twiml(token),
    )


def _form(name: str) -> str:
    return (request.form.get(name) or "").strip()


def _call_row(session: Session, call_sid: str) -> Call | None:
    return session.query(Call).filter_by(call_sid=call_sid).one_or_none() if call_sid else None


@bp.post("/webhook/incoming_call")
@bp.post("/webhook/voice")
@bp.post("/webhook/incoming-call")
@bp.post("/incoming_call")
def incoming_call() -> Response:
    return _answer("inbound")


@bp.post("/webhook/outbound_call")
def outbound_call() -> Response:
    """TwiML for a call the server placed: the business's number is `From`, the lead is `To`."""
    return _answer("outbound")


def _answer(direction: str) -> Response:
    """Connect the call to its business's agent, under the call limits."""
    call_sid, from_number, to_number = _form("CallSid"), _form("From"), _form("To")
    if not call_sid:
        abort(400, "CallSid is required")
    business_number = to_number if direction == "inbound" else from_number
    status = _form("CallStatus") or ("ringing" if direction == "inbound" else "in-progress")
    try:
        # One bound for the lookup and the admission together.
        with within_bound():
            with bounded_session() as session:
                business = answering_business(session, business_number)
                if business is None:
                    return _unknown_number(session, call_sid, direction, from_number, to_number, business_number)
            gevent.sleep(0)  # audio of the live calls waiting on this loop goes first (a yield between steps)
            # Its own locked transaction (no connection of ours held meanwhile: a request holding
            # one while waiting for a second would starve the pool when many calls arrive at once).
            admission = CallLimits.from_settings(get_db(), _settings()).admit(
                call_sid=call_sid, business=business, direction=direction, from_number=from_number,
                to_number=to_number, status=status)
    except DatabaseUnavailable as exc:
        # No row can be written; Twilio's status callback stores the call once the database is back.
        metrics.CALLS_REFUSED.labels("database").inc()
        log.error("call not answered: the database is unavailable; the caller hears an apology",
                  extra={"call_sid": call_sid, "direction": direction, "why": str(exc)})
        return _xml(twiml.say_and_hangup(twiml.APOLOGY_UNAVAILABLE))
    if not admission.admitted:
        return _xml(twiml.say_and_hangup(twiml.BUSY))
    gevent.sleep(0)
    log.info("call answered", extra={"call_sid": call_sid, "business_id": business.id, "direction": direction})
    return _xml(_stream_twiml(StreamParameters(call_sid=call_sid, business_id=business.id, direction=direction,
                                               from_number=from_number, to_number=to_number),
                              admission.stream_due_by))


def _unknown_number(session: Session, call_sid: str, direction: str, from_number: str, to_number: str,
                    business_number: str) -> Response:
    log.warning("call for a number of no business", extra={"call_sid": call_sid, "number": mask_number(business_number),
                                                           "direction": direction})
    if direction == "outbound":
        return _xml(twiml.hangup())
    open_call(session, call_sid=call_sid, business=None, direction=direction, from_number=from_number,
              to_number=to_number, status="completed", end_reason=EndReason.UNKNOWN_NUMBER)
    return _xml(twiml.say_and_hangup(twiml.APOLOGY_UNKNOWN_NUMBER))


@bp.post("/webhook/stream_ended")
def stream_ended() -> Response:
    call_sid = _form("CallSid")
    try:
        with database() as session:
            call = _call_row(session, call_sid)
            voicemail_message = voicemail.after_stream(session, call) if call else None
            warm = call is not None and warm_transfer.is_warm(session, call)
    except DatabaseUnavailable as exc:
        # Why the stream ended (a goodbye, a transfer, a failure) is in the row we cannot read.
        log.error("stream ended: the database is unavailable; the caller hears an apology",
                  extra={"call_sid": call_sid or "-", "why": str(exc)})
        return _xml(twiml.say_and_hangup(twiml.APOLOGY_UNAVAILABLE))
    reason = call.end_reason if call else None
    log.info("stream ended", extra={"call_sid": call_sid or "-", "end_reason": reason})
    failed = reason in end_reasons.FAILURES
    if voicemail_message:
        return _xml(twiml.say_and_hangup(voicemail_message))
    if warm:
        # The person hears who is calling and presses 1 first (server/routes/warm_transfer.py);
        # the caller's call sid rides in the whisper's address, which Twilio signs.
        base = _base_url()
        return _xml(twiml.warm_dial(call.transfer_to, caller_id=call.from_number or None,
                                    timeout_s=_settings().timing.transfer_ring_s,
                                    action_url=f"{base}{WARM_DIAL_ENDED_PATH}",
                                    whisper_url=f"{base}{WARM_WHISPER_PATH}?call={quote(call.call_sid)}"))
    if call is not None and call.transfer_to and (reason in (EndReason.TRANSFER, EndReason.SHUTDOWN) or failed):
        # Asked for by the agent, or by the business for a deploy, or our side failed and the
        # business has someone to take the call.
        # The caller ID the person sees: the caller's number (inbound), the business's (outbound).
        return _xml(twiml.dial(call.transfer_to, caller_id=call.from_number or None,
                               timeout_s=_settings().timing.transfer_ring_s,
                               action_url=f"{_base_url()}/webhook/transfer_ended",
                               say=twiml.FAULT_TRANSFER if failed else None))
    if failed:
        return _xml(twiml.say_and_hangup(twiml.APOLOGY_UNAVAILABLE))
    return _xml(twiml.hangup())


@bp.post("/webhook/transfer_ended")
def transfer_ended() -> Response:
    """The <Dial> to a person is over: if no one took the call, say so politely and hang up."""
    call_sid, outcome = _form("CallSid"), _form("DialCallStatus").lower()

    def store(session: Session) -> None:
        call = _call_row(session, call_sid)
        if call is not None:
            call.transfer_status = outcome or None

    store_or_keep("transfer outcome", call_sid, store)
    log.info("transfer ended", extra={"call_sid": call_sid or "-", "dial_status": outcome})
    if outcome in ("completed", "answered"):
        return _xml(twiml.hangup())
    return _xml(twiml.say_and_hangup(twiml.TRANSFER_FAILED))


@bp.post("/webhook/amd_status")
def amd_status() -> Response:
    """Twilio's asynchronous answering machine detection. While the call's first words wait for
    it, the call acts on it (services/voicemail.py); after, a machine is left the business's
    voicemail message (or hung up on) by replacing the live call's TwiML."""
    call_sid, answered_by = _form("CallSid"), _form("AnsweredBy").lower()
    if not call_sid or not answered_by:
        abort(400, "CallSid and AnsweredBy are required")
    stored, detection = store_or_keep("machine detection", call_sid,
                                      lambda session: voicemail.record_detection(session, call_sid, answered_by))
    if stored and not detection.known:
        log.warning("machine detection for an unknown call", extra={"call_sid": call_sid})
        return _xml(twiml.empty())
    log.info("answered by", extra={"call_sid": call_sid, "answered_by": answered_by,
                                   "late": bool(stored and detection.late)})
    # Without the database the call cannot learn of it, nor the message be read: a machine is hung up on.
    if voicemail.is_machine(answered_by) and (not stored or detection.late):
        message = detection.message if stored else ""
        try:
            TwilioRest(_settings()).update_twiml(call_sid, twiml.say_and_hangup(message) if message else twiml.hangup())
        except (TwilioNotConfigured, TwilioRestError) as exc:
            log.error("could not leave the voicemail", extra={"call_sid": call_sid, "error": str(exc)})
            if message:
                store_or_keep("voicemail not left", call_sid,
                              lambda session: voicemail.message_not_left(session, call_sid))
    return _xml(twiml.empty())


@bp.post("/webhook/call_status")
def call_status() -> Response:
    call_sid, status = _form("CallSid"), _form("CallStatus").lower()
    if not call_sid or status not in KNOWN_STATUSES:
        abort(400, "CallSid and a known CallStatus are required")
    duration_text, from_number, to_number = _form("CallDuration"), _form("From"), _form("To")
    duration = float(duration_text) if duration_text.isdigit() else None
    inbound = _form("Direction") == "inbound"

    def store(session: Session) -> Call | None:
        call = apply_status(session, call_sid, status, duration)
        if call is None and from_number and to_number:
            # A call we have no row for (its webhook failed or was never asked): keep it on record.
            business = business_for_number(session, to_number if inbound else from_number)
            open_call(session, call_sid=call_sid, business=business, direction="inbound" if inbound else "outbound",
                      from_number=from_number, to_number=to_number, status=status)
            call = apply_status(session, call_sid, status, duration)
        return call

    def sweep_and_store(session: Session) -> Call | None:
        # Before this call's own row is touched: on PostgreSQL the admissions' lock comes first.
        CallLimits.from_settings(get_db(), _settings()).close_lost_streams(session)
        return store(session)

    stored, call = store_or_keep("call status", call_sid, sweep_and_store, later=store)
    if stored and call is None:
        log.warning("status for an unknown call", extra={"call_sid": call_sid, "status": status})
    else:
        log.info("call status", extra={"call_sid": call_sid, "status": status})
    return _xml(twiml.empty())


@bp.post("/webhook/stream_status")
def stream_status() -> Response:
    log.info("stream status", extra={"call_sid": _form("CallSid") or "-", "stream_sid": _form("StreamSid"),
                                     "event": _form("StreamEvent"), "error": _form("StreamError")})
    return _xml(twiml.empty())


@bp.post("/webhook/recording_status")
def recording_status() -> Response:
    """Twilio's recording callback: the call's recording is ready (or absent), with its URL and length."""
    call_sid, status = _form("CallSid"), _form("RecordingStatus").lower()
    if not call_sid or not status:
        abort(400, "CallSid and RecordingStatus are required")
    recording_sid, url, duration = _form("RecordingSid"), _form("RecordingUrl"), _form("RecordingDuration")

    def store(session: Session) -> Call | None:
        return recording.store_status(session, call_sid, recording_sid=recording_sid, status=status, url=url,
                                      duration=duration)

    stored, call = store_or_keep("recording status", call_sid, store)
    if stored and call is None:
        log.warning("recording status for an unknown call", extra={"call_sid": call_sid, "status": status})
    else:
        log.info("recording status", extra={"call_sid": call_sid, "status": status,
                                            "duration_s": call.recording_duration_s if call else None})
    return _xml(twiml.empty())
