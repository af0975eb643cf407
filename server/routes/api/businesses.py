"""/api/businesses: a business's settings and the numbers that ring it."""
from __future__ import annotations

import logging
from datetime import datetime, timezone

from flask import Blueprint, abort, request, url_for
from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

import prompts
from server import api_answers as answers
from server.api_schemas import BusinessCreate, BusinessPatch, parse
from server.request_db import request_session
from services.logging_setup import mask_number
from services.scheduling import business_today
from services.store.models import Business, PhoneNumber, utcnow
from server.routes.api.common import commit_or_409, get_or_404, json_object

bp = Blueprint("businesses", __name__, url_prefix="/businesses")
log = logging.getLogger("api")
NUMBER_TAKEN = "a phone number already belongs to another business"


@bp.get("")
def list_businesses():
    rows = request_session().scalars(
        select(Business).options(selectinload(Business.phone_numbers)).order_by(Business.id))
    return {"businesses": [answers.business_json(b) for b in rows]}


@bp.post("")
def create_business():
    fields = parse(BusinessCreate, json_object()).given()
    session = request_session()
    numbers = fields.pop("phone_numbers", [])
    _ensure_numbers_free(session, numbers, business_id=None)
    business = Business(**fields, phone_numbers=[PhoneNumber(e164=n) for n in numbers])
    session.add(business)
    commit_or_409(session, NUMBER_TAKEN)
    log.info("business created", extra={"business_id": business.id, "numbers": ",".join(map(mask_number, numbers))})
    return answers.business_json(business), 201, {"Location": url_for(".get_business", business_id=business.id)}


@bp.get("/<int:business_id>")
def get_business(business_id: int):
    return answers.business_json(get_or_404(request_session(), Business, business_id, "business"))


@bp.get("/<int:business_id>/prompt-preview")
def prompt_preview(business_id: int):
    """What a call to this business would be told, layer by layer, with lengths and warnings."""
    direction = request.args.get("direction", "inbound")
    if direction not in ("inbound", "outbound"):
        abort(422, "direction must be inbound or outbound")
    business = get_or_404(request_session(), Business, business_id, "business")
    today = business_today(business, datetime.now(timezone.utc))
    return {"business_id": business.id, **prompts.prompt_preview(business, direction, today=today)}


@bp.patch("/<int:business_id>")
def update_business(business_id: int):
    fields = parse(BusinessPatch, json_object()).given()
    changed = list(fields)
    session = request_session()
    business = get_or_404(session, Business, business_id, "business")
    if "phone_numbers" in fields:
        numbers = fields.pop("phone_numbers")
        _ensure_numbers_free(session, numbers, business_id=business.id)
        # Keep the rows of numbers that stay, so their ids (and history) survive.
        kept = {p.e164: p for p in business.phone_numbers}
        business.phone_numbers = [kept.get(n) or PhoneNumber(e164=n) for n in numbers]
    for name, value in fields.items():
        setattr(business, name, value)
    business.updated_at = utcnow()  # also when only the numbers changed
    commit_or_409(session, NUMBER_TAKEN)
    log.info("business updated", extra={"business_id": business.id, "fields": ",".join(sorted(changed))})
    return answers.business_json(business)


@bp.delete("/<int:business_id>")
def delete_business(business_id: int):
    session = request_session()
    session.delete(get_or_404(session, Business, business_id, "business"))
    session.commit()
    log.info("business deleted", extra={"business_id": business_id})
    return "", 204


def _ensure_numbers_free(session: Session, numbers: list[str], business_id: int | None) -> None:
    if not numbers:
        return
    query = select(PhoneNumber).where(PhoneNumber.e164.in_(numbers))
    if business_id is not None:
        query = query.where(PhoneNumber.business_id != business_id)
    taken = session.scalars(query).first()
    if taken is not None:
        abort(409, f"{taken.e164} already belongs to business {taken.business_id}")
