"""/api/leads: people a business knows by phone number."""
from __future__ import annotations

import logging

from flask import Blueprint, abort, request
from sqlalchemy import select

from server import api_answers as answers
from server.api_schemas import LeadCreate, LeadFilter, parse
from server.request_db import request_session
from server.routes.api import auditing
from server.routes.api.principal import ensure_visible, scoped
from services.store.models import Business, Lead
from server.routes.api.common import commit_or_409, flush_or_409, get_or_404, json_object

bp = Blueprint("leads", __name__, url_prefix="/leads")
log = logging.getLogger("api")


@bp.get("")
def list_leads():
    query = parse(LeadFilter, request.args.to_dict())
    stmt = scoped(select(Lead), Lead.business_id)
    if query.business_id is not None:
        stmt = stmt.where(Lead.business_id == query.business_id)
    if query.phone is not None:
        stmt = stmt.where(Lead.phone == query.phone)
    stmt = stmt.order_by(Lead.id.desc()).limit(query.limit).offset(query.offset)
    leads = request_session().scalars(stmt)
    return {"leads": [answers.lead_json(lead) for lead in leads], "limit": query.limit, "offset": query.offset}


@bp.post("")
def create_lead():
    body = parse(LeadCreate, json_object())
    session = request_session()
    ensure_visible(body.business_id, f"business {body.business_id} not found")
    get_or_404(session, Business, body.business_id, "business")
    conflict = f"business {body.business_id} already has a lead for {body.phone}"
    if session.scalar(select(Lead.id).where(Lead.business_id == body.business_id, Lead.phone == body.phone)):
        abort(409, conflict)
    lead = Lead(**body.given())
    session.add(lead)
    flush_or_409(session, conflict)
    auditing.note(session, "lead", lead.id, lead.business_id, body.given(), status=201)
    commit_or_409(session, conflict)
    log.info("lead created", extra={"lead_id": lead.id, "business_id": lead.business_id})
    return answers.lead_json(lead), 201
