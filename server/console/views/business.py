"""Business settings: every field of the API's BusinessPatch, validated by it; the prompt preview."""
from __future__ import annotations

import logging
from datetime import datetime, timezone
from types import SimpleNamespace

from flask import abort, current_app, flash, jsonify, redirect, render_template, request, url_for
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import selectinload

import prompts
from server.api_schemas import VOICES, BusinessPatch, ValidationError, parse
from server.console import auditing, forms, labels
from server.console.access import current_viewer, scoped
from server.console.blueprint import bp
from server.request_db import request_session
from server.routes.api.businesses import merge_realtime
from services import realtime_settings
from services.scheduling import business_today
from services.store import audit
from services.store import businesses as business_store
from services.store.businesses import NUMBER_TAKEN
from services.store.models import Business

log = logging.getLogger("console")


@bp.get("/businesses")
def businesses():
    viewer = current_viewer()
    if not viewer.is_admin:
        return redirect(url_for("console.business_settings", business_id=viewer.business_id))
    rows = request_session().scalars(
        select(Business).options(selectinload(Business.phone_numbers)).order_by(Business.id)).all()
    return render_template("console/businesses.html", businesses=rows)


def viewed_business(business_id: int) -> Business:
    stmt = scoped(select(Business).where(Business.id == business_id), Business.id, current_viewer())
    business = request_session().scalar(stmt.options(selectinload(Business.phone_numbers)))
    if business is None:
        abort(404, f"business {business_id} not found")
    return business


@bp.route("/businesses/<int:business_id>", methods=["GET", "POST"])
def business_settings(business_id: int):
    session = request_session()
    business = viewed_business(business_id)
    errors: dict[str, str] = {}
    form_values = None
    if request.method == "POST":
        fields, errors = posted_fields(BusinessPatch)
        if not errors:
            errors = save(session, business, fields)
        if not errors:
            log.info("business updated from the console", extra={"business_id": business.id,
                                                                  "fields": ",".join(sorted(fields))})
            flash(labels.t("saved"), "ok")
            return redirect(url_for("console.business_settings", business_id=business.id))
        session.rollback()
        business = viewed_business(business_id)
        form_values = request.form.to_dict()
        if not current_viewer().is_admin:  # the admin's fields are shown, not posted: shown as stored
            form_values.update({k: v for k, v in values_of(business).items() if k in business_store.ADMIN_FIELDS})
        flash(labels.t("not_saved"), "error")
    return render_form(business, form_values or values_of(business), errors, _previews(business))


def posted_fields(model) -> tuple[dict, dict[str, str]]:
    """The posted form as the API's `model` takes it: (its fields, {field: problem})."""
    body, errors = forms.business_body(request.form)
    fields: dict = {}
    try:
        fields = parse(model, body).given()
    except ValidationError as exc:
        errors = {**exc.fields, **errors}
    return fields, errors


def render_form(business: Business | None, values, errors: dict[str, str], previews: dict):
    """The settings form (a new business's when `business` is None), 422 when it has errors."""
    return render_template("console/business.html", business=business, values=values, errors=errors,
                           voices=VOICES, choices=forms.CHOICE_FIELDS, days=forms.DAYS,
                           special_days=forms.SPECIAL_DAYS, previews=previews, cap=prompts.BUSINESS_PROMPT_CAP,
                           realtime=realtime_options()), 422 if errors else 200


# What the prompt builders read of a business (prompts/layers.py, prompts/crm.py, and the today
# layer's hours and zone).
PREVIEWED = ("name", "business_prompt", "greeting", "outbound_greeting", "use_customer_name", "record_calls",
             "recording_notice", "working_hours", "timezone")


@bp.post("/businesses/<int:business_id>/preview")
def preview_draft(business_id: int):
    """The prompt layers the form's values, unsaved, would give the next call: the page shows them as
    the owner types. Validated as a save is; nothing is stored."""
    business = viewed_business(business_id)
    body, _ = forms.business_body(request.form)
    try:
        fields = parse(BusinessPatch, {name: body[name] for name in PREVIEWED if name in body}).given()
    except ValidationError as exc:
        return jsonify(fields=exc.fields), 422
    draft = SimpleNamespace(**{**{name: getattr(business, name) for name in PREVIEWED}, **fields})
    return _previews(draft)


def _previews(business) -> dict:
    """Both directions' prompt layers, as the API's preview builds them (today's layer included)."""
    today = business_today(business, datetime.now(timezone.utc))
    return {direction: prompts.prompt_preview(business, direction, today=today) for direction in ("inbound", "outbound")}


def save(session, business: Business, fields: dict) -> dict[str, str]:
    """Apply validated fields as PATCH /api/businesses/<id> does; {field: problem} when they cannot be."""
    names = tuple(merge_realtime(fields, business.realtime))
    try:
        business_store.update(session, business, fields, by_admin=current_viewer().is_admin)
    except business_store.AdminOnly as exc:
        return dict.fromkeys(exc.fields, str(exc))
    except business_store.NumberTaken as exc:
        return {"phone_numbers": str(exc)}
    auditing.note(session, audit.Change("business", business.id, business.id, names), status=302)
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        return {"phone_numbers": NUMBER_TAKEN}
    return {}


def values_of(business) -> dict[str, str]:
    """The stored settings as the form shows them."""
    values = {name: getattr(business, name) for name in forms.TEXT_FIELDS}
    values.update({name: getattr(business, name) or "" for name in forms.OPTIONAL_FIELDS})
    values.update({name: "on" if getattr(business, name) else "" for name in forms.FLAG_FIELDS})
    values.update({name: str(getattr(business, name)) for name in forms.COUNT_FIELDS})
    values.update({name: getattr(business, name) for name in forms.CHOICE_FIELDS})
    values["backchannel_words"] = "\n".join(business.backchannel_words or [])
    values["phone_numbers"] = "\n".join(p.e164 for p in sorted(business.phone_numbers, key=lambda p: p.id))
    hours = business.working_hours or {}
    for day in forms.DAYS:
        values[f"hours_{day}"] = forms.hours_text(hours.get(day, []))
    for day in forms.SPECIAL_DAYS:
        given = hours.get(day)
        values[f"hours_{day}"] = "" if given is None else forms.hours_text(given) or forms.CLOSED_WORDS[1]
    values["webhook_secret"] = ""
    values.update(forms.realtime_values(business.realtime))
    return values


def realtime_options() -> dict:
    """What the "voice and listening" section offers, and the server's defaults its empty inputs show."""
    settings = current_app.config["SETTINGS"]
    return {"models": realtime_settings.known_models(settings.openai_realtime_extra_models,
                                                     settings.openai_realtime_model),
            "defaults": realtime_settings.effective(None, settings.openai_realtime_model).as_json(),
            "turn_detection": realtime_settings.TURN_DETECTION, "eagerness": realtime_settings.EAGERNESS,
            "noise_reduction": realtime_settings.NOISE_REDUCTION,
            "transcription_models": realtime_settings.TRANSCRIPTION_MODELS}
