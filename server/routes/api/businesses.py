"""/api/businesses: a business's settings and the numbers that ring it.

Listing, creating and deleting businesses is the admin's; a business's key reads and edits its
own business, except what the operator decides: the numbers that route calls to it and its share
of the server's concurrent calls.
"""
from __future__ import annotations

import logging
from datetime import datetime, timezone

from flask import Blueprint, abort, current_app, request, url_for
from sqlalchemy import select
from sqlalchemy.orm import selectinload

import prompts
from server import api_answers as answers
from server.api_schemas import BusinessCreate, BusinessPatch, parse
from server.request_db import request_session
from server.routes.api import auditing
from server.routes.api.principal import current, ensure_visible, require_admin
from services import realtime_settings
from services.logging_setup import mask_number
from services.post_call import webhook_test_event
from services.scheduling import business_today
from services.store import businesses
from services.store.businesses import NUMBER_TAKEN
from services.store.models import Business
from server.routes.api.common import commit_or_409, flush_or_409, get_or_404, json_object

bp = Blueprint("businesses", __name__, url_prefix="/businesses")
log = logging.getLogger("api")


@bp.get("")
def list_businesses():
    require_admin()
    rows = request_session().scalars(
        select(Business).options(selectinload(Business.phone_numbers)).order_by(Business.id))
    return {"businesses": [answers.business_json(b) for b in rows]}


@bp.post("")
def create_business():
    require_admin()
    fields = parse(BusinessCreate, json_object()).given()
    given = merge_realtime(fields, None)
    session = request_session()
    try:
        business = businesses.create(session, fields)
    except businesses.NumberTaken as exc:
        abort(409, str(exc))
    flush_or_409(session, NUMBER_TAKEN)
    auditing.note(session, "business", business.id, business.id, given, status=201)
    commit_or_409(session, NUMBER_TAKEN)
    numbers = fields.get("phone_numbers", [])
    log.info("business created", extra={"business_id": business.id, "numbers": ",".join(map(mask_number, numbers))})
    return answers.business_json(business), 201, {"Location": url_for(".get_business", business_id=business.id)}


@bp.get("/<int:business_id>")
def get_business(business_id: int):
    return answers.business_json(_business_or_404(business_id))


@bp.get("/<int:business_id>/prompt-preview")
def prompt_preview(business_id: int):
    """What a call to this business would be told, layer by layer, with lengths and warnings."""
    direction = request.args.get("direction", "inbound")
    if direction not in ("inbound", "outbound"):
        abort(422, "direction must be inbound or outbound")
    business = _business_or_404(business_id)
    today = business_today(business, datetime.now(timezone.utc))
    return {"business_id": business.id, **prompts.prompt_preview(business, direction, today=today)}


@bp.patch("/<int:business_id>")
def update_business(business_id: int):
    fields = parse(BusinessPatch, json_object()).given()
    session = request_session()
    business = _business_or_404(business_id)
    changed = merge_realtime(fields, business.realtime)
    try:
        businesses.update(session, business, fields, by_admin=current().is_admin)
    except businesses.AdminOnly as exc:
        abort(403, str(exc))
    except businesses.NumberTaken as exc:
        abort(409, str(exc))
    auditing.note(session, "business", business.id, business.id, changed, status=200)
    commit_or_409(session, NUMBER_TAKEN)
    log.info("business updated", extra={"business_id": business.id, "fields": ",".join(sorted(changed))})
    return answers.business_json(business)


@bp.post("/<int:business_id>/webhook-test")
def webhook_test(business_id: int):
    """A signed `test` event to the business's saved webhook URL, now, as a call's event is sent
    (public https only); answers with the attempt, which is stored like every delivery."""
    session = request_session()
    business = _business_or_404(business_id)
    try:
        delivery = webhook_test_event.send(session, current_app.config["SETTINGS"], business)
    except webhook_test_event.NoWebhook:
        abort(409, "the business has no webhook_url to send a test event to")
    auditing.note(session, "business", business_id, business_id, ["webhook_test"], status=200)
    session.commit()
    log.info("webhook test event sent", extra={"business_id": business_id, "event_id": delivery.event_id,
                                               "ok": delivery.ok, "status_code": delivery.status_code})
    return answers.delivery_json(delivery)


@bp.delete("/<int:business_id>")
def delete_business(business_id: int):
    require_admin()
    session = request_session()
    session.delete(get_or_404(session, Business, business_id, "business"))
    auditing.note(session, "business", business_id, business_id, status=204)
    session.commit()
    log.info("business deleted", extra={"business_id": business_id})
    return "", 204


def merge_realtime(fields: dict, stored: dict | None) -> list[str]:
    """Put the Realtime choices given in `fields` over those `stored` (in place, as the business's
    column keeps them); the fields' names as the audit log gives them, taken before the merge."""
    names = audited_names(fields)
    if "realtime" in fields:
        fields["realtime"] = realtime_settings.merge(stored, fields["realtime"])
    return names


def audited_names(fields: dict) -> list[str]:
    """The changed fields as the audit log names them: each Realtime setting by its own name."""
    names = [name for name in fields if name != "realtime"]
    if "realtime" in fields:
        chosen = fields["realtime"]  # None resets them all
        names += [f"realtime.{key}" for key in chosen] if chosen else ["realtime"]
    return names


def _business_or_404(business_id: int) -> Business:
    ensure_visible(business_id, f"business {business_id} not found")
    return get_or_404(request_session(), Business, business_id, "business")
