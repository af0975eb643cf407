"""/api/appointments: what callers booked, soonest first."""
from __future__ import annotations

from flask import Blueprint, request
from sqlalchemy import select

from server import api_answers as answers
from server import api_schemas as schemas
from server.request_db import request_session
from services.store.models import Appointment

bp = Blueprint("appointments", __name__, url_prefix="/appointments")


@bp.get("")
def list_appointments():
    """Filters: business_id, phone, from/to (ISO times, on starts_at)."""
    query = schemas.clean_query(request.args.to_dict(), schemas.APPOINTMENT_QUERY)
    stmt = select(Appointment)
    if "business_id" in query:
        stmt = stmt.where(Appointment.business_id == query["business_id"])
    if "phone" in query:
        stmt = stmt.where(Appointment.phone == query["phone"])
    if "from" in query:
        stmt = stmt.where(Appointment.starts_at >= query["from"])
    if "to" in query:
        stmt = stmt.where(Appointment.starts_at < query["to"])
    stmt = stmt.order_by(Appointment.starts_at, Appointment.id).limit(query["limit"]).offset(query["offset"])
    rows = request_session().scalars(stmt)
    return {"appointments": [answers.appointment_json(a) for a in rows], "limit": query["limit"],
            "offset": query["offset"]}
