"""POST /api/calls/outbound: the server calls a lead back through Twilio.

The call's TwiML comes from /webhook/outbound_call (outbound greeting and rules), its status
from /webhook/call_status, and Twilio's answering machine detection from /webhook/amd_status.
"""
from __future__ import annotations

import logging

from flask import Blueprint, abort, current_app, request
from sqlalchemy import select

from server.api_schemas import OutboundCallRequest, parse
from services.store.call_records import open_call
from server.request_db import get_db, request_session
from services.store.models import Business, Lead, PhoneNumber
from server.routes.api import auditing
from server.routes.api.common import get_or_404, json_object
from server.routes.api.principal import current, ensure_visible
from services.call_limits import CallLimits
from services.twilio_rest import TwilioNotConfigured, TwilioRest, TwilioRestError

bp = Blueprint("outbound", __name__, url_prefix="/calls")
log = logging.getLogger("api")


@bp.post("/outbound")
def place_outbound_call():
    body = parse(OutboundCallRequest, json_object())
    settings = current_app.config["SETTINGS"]
    session = request_session()
    ensure_visible(body.business_id, f"business {body.business_id} not found")
    business = get_or_404(session, Business, body.business_id, "business")
    lead_id = body.lead_id
    if lead_id is not None:
        lead = get_or_404(session, Lead, lead_id, "lead")
        if lead.business_id != business.id:
            # A key is not told that another business's lead exists.
            if not current().is_admin:
                abort(404, f"lead {lead_id} not found")
            abort(422, f"lead {lead_id} belongs to another business")
    from_number = session.scalar(select(PhoneNumber.e164).where(PhoneNumber.business_id == business.id)
                                 .order_by(PhoneNumber.id).limit(1))
    if from_number is None:
        abort(409, f"business {business.id} has no phone number to call from")
    try:
        twilio = TwilioRest(settings)
    except TwilioNotConfigured as exc:
        abort(409, str(exc))
    room = CallLimits.from_settings(get_db(), settings).has_room(session, business)
    if not room.admitted:
        who = "the business" if room.limit == "business" else "the server"
        abort(409, f"{who} is at its limit of concurrent calls")
    base = settings.public_base_url or request.host_url.rstrip("/")
    try:
        placed = twilio.create_call(to=body.to, from_=from_number, url=f"{base}/webhook/outbound_call",
                                    status_callback=f"{base}/webhook/call_status",
                                    amd_callback=f"{base}/webhook/amd_status")
    except TwilioRestError as exc:
        # Twilio's 4xx is about the input (a number it will not call); anything else is Twilio's trouble.
        status = 422 if exc.status is not None and 400 <= exc.status < 500 else 502
        abort(status, f"Twilio did not place the call: {exc}")
    call = open_call(session, call_sid=placed.call_sid, business=business, direction="outbound",
                     from_number=from_number, to_number=body.to, status=placed.status)
    call.lead_id = lead_id
    auditing.note(session, "call", placed.call_sid, business.id, body.given(), status=201)
    session.commit()
    log.info("outbound call placed", extra={"call_sid": placed.call_sid, "business_id": business.id,
                                            "lead_id": lead_id})
    return {"call_sid": placed.call_sid, "status": placed.status, "business_id": business.id,
            "from": from_number, "to": body.to, "lead_id": lead_id}, 201
