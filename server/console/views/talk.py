"""Talk to your agent: a test call from the browser, through the real call session.

The page asks (a CSRF-protected POST) for a test call of its business: the call's row is admitted
as a phone call is (the business's concurrent call limit counts it), marked `is_test`, with a
synthetic call sid, and the answer carries the stream's parameters and its token. The browser then
speaks Twilio's Media Streams protocol on the media websocket (static/talk.js); the token, good
once and until the stream is due (`stream_start_timeout_s`, 30 s by default), is what lets it in
(server/routes/media.py).
"""
from __future__ import annotations

import logging
import secrets

from flask import current_app, jsonify, render_template, request, url_for
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError

from server.console import labels
from server.console.access import current_viewer, scoped
from server.console.blueprint import bp
from server.console.views.business import viewed_business
from server.console.views.calls import viewed_call
from server.request_db import get_db, request_session
from server.security import StreamToken
from server.stream_parameters import CONSOLE_MEDIA_PATH, StreamParameters
from services.call_journal import is_database_trouble
from services.call_limits import CallLimits
from services.store.models import Business

log = logging.getLogger("console")
TEST_SID_PREFIX = "TEST"  # never a Twilio sid ("CA…"): a test call's row cannot be taken for a real one


@bp.get("/talk")
def talk():
    viewer = current_viewer()
    business_id = viewer.business_id
    if viewer.is_admin:
        raw = request.args.get("business_id", "")
        business_id = int(raw) if raw.isascii() and raw.isdigit() and len(raw) < 19 else None
    names = dict(request_session().execute(
        scoped(select(Business.id, Business.name), Business.id, viewer).order_by(Business.id)).all())
    if business_id is None and len(names) == 1:
        business_id = next(iter(names))
    business = viewed_business(business_id) if business_id is not None else None
    return render_template("console/talk.html", business=business, names=names, labels_json=_page_labels())


@bp.post("/talk/<int:business_id>/call")
def talk_call(business_id: int):
    """A test call of the business, admitted and stored; its stream's parameters and token."""
    business = viewed_business(business_id)
    settings = current_app.config["SETTINGS"]
    numbers = sorted(business.phone_numbers, key=lambda p: p.id)
    params = StreamParameters(call_sid=TEST_SID_PREFIX + secrets.token_hex(16), business_id=business.id,
                              direction="inbound", from_number="", to_number=numbers[0].e164 if numbers else "",
                              test=True)
    try:
        admission = CallLimits.from_settings(get_db(), settings).admit(
            call_sid=params.call_sid, business=business, direction=params.direction, from_number=params.from_number,
            to_number=params.to_number, status="ringing", is_test=True)
    except SQLAlchemyError as exc:
        if not is_database_trouble(exc):
            raise
        log.error("test call not opened: the database is unavailable", extra={"business_id": business.id})
        return jsonify(error=labels.t("talk_unavailable")), 503
    if not admission.admitted:
        return jsonify(error=labels.t("talk_busy")), 409
    token = StreamToken(params.token_key(settings.secret_key)).issue_until(
        params.signed_text(), admission.stream_due_by.timestamp())
    log.info("test call opened from the console", extra={"call_sid": params.call_sid, "business_id": business.id})
    return jsonify(call_sid=params.call_sid, stream_sid="MZ" + secrets.token_hex(16), media_path=CONSOLE_MEDIA_PATH,
                   parameters=params.twiml(token),
                   call_url=url_for("console.call_page", call_sid=params.call_sid),
                   turns_url=url_for("console.talk_turns", call_sid=params.call_sid))


@bp.get("/talk/calls/<call_sid>/turns")
def talk_turns(call_sid: str):
    """The test call's transcript so far, for the page to show as the call goes."""
    call = viewed_call(call_sid)
    if not call.is_test:
        return jsonify(error=labels.t("call_not_found")), 404
    return jsonify(ended=call.ended_at is not None, end_reason=call.end_reason,
                   turns=[{"speaker": turn.speaker, "text": turn.text} for turn in call.turns])


def _page_labels() -> dict[str, str]:
    """What the page's script says, in the viewer's language."""
    keys = ("talk_state_idle", "talk_state_asking", "talk_state_connecting", "talk_state_live",
            "talk_state_ending", "talk_state_ended", "talk_state_failed", "talk_no_microphone",
            "talk_unsupported", "talk_refused", "caller", "agent", "dtmf")
    return {key: labels.t(key) for key in keys}
