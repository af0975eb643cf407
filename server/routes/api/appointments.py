"""/api/appointments: what callers booked, soonest first."""
from __future__ import annotations

from flask import Blueprint, request
from sqlalchemy import select

from server import api_answers as answers
from server.api_schemas import AppointmentFilter, parse
from server.request_db import request_session
from server.routes.api.principal import scoped
from services.store.models import Appointment

bp = Blueprint("appointments", __name__, url_prefix="/appointments")


@bp.get("")
def list_appointments():
    """Filters: business_id, phone, from/to (ISO times, on starts_at)."""
    query = parse(AppointmentFilter, request.args.to_dict())
    stmt = scoped(select(Appointment), Appointment.business_id)
    if query.business_id is not None:
        stmt = stmt.where(Appointment.business_id == query.business_id)
    if query.phone is not None:
        stmt = stmt.where(Appointment.phone == query.phone)
    if query.from_ is not None:
        stmt = stmt.where(Appointment.starts_at >= query.from_)
    if query.to is not None:
        stmt = stmt.where(Appointment.starts_at < query.to)
    stmt = stmt.order_by(Appointment.starts_at, Appointment.id).limit(query.limit).offset(query.offset)
    rows = request_session().scalars(stmt)
    return {"appointments": [answers.appointment_json(a) for a in rows], "limit": query.limit,
            "offset": query.offset}
