"""A new business, for the admin: every field POST /api/businesses takes, validated by its model
(BusinessCreate), created and audited as the API creates it; then its settings page."""
from __future__ import annotations

import logging
from types import SimpleNamespace

from flask import abort, flash, redirect, request, url_for
from sqlalchemy.exc import IntegrityError

from server.api_schemas import BusinessCreate
from server.console import auditing, labels
from server.console.access import current_viewer
from server.console.blueprint import bp
from server.console.views.business import posted_fields, render_form, values_of
from server.request_db import request_session
from server.routes.api.businesses import merge_realtime
from services.store import audit
from services.store import businesses as business_store
from services.store.businesses import NUMBER_TAKEN
from services.store.models import Business

log = logging.getLogger("console")


@bp.route("/businesses/new", methods=["GET", "POST"])
def new_business():
    if not current_viewer().is_admin:
        abort(403, labels.t("admin_only"))
    errors: dict[str, str] = {}
    values = values_of(defaults())
    if request.method == "POST":
        fields, errors = posted_fields(BusinessCreate)
        if not errors:
            business, errors = create(fields)
        if not errors:
            log.info("business created from the console", extra={"business_id": business.id})
            flash(labels.t("business_created"), "ok")
            return redirect(url_for("console.business_settings", business_id=business.id))
        values = request.form
        flash(labels.t("not_created"), "error")
    return render_form(None, values, errors, {})


def create(fields: dict) -> tuple[Business | None, dict[str, str]]:
    """(the business, {}) once committed, else (None, {field: problem}) with nothing stored."""
    session = request_session()
    names = merge_realtime(fields, None)
    try:
        business = business_store.create(session, fields)
        session.flush()
        auditing.note(session, audit.Change("business", business.id, business.id, tuple(names)), status=302)
        session.commit()
    except business_store.NumberTaken as exc:
        session.rollback()
        return None, {"phone_numbers": str(exc)}
    except IntegrityError:  # a concurrent writer took a number between the check and the commit
        session.rollback()
        return None, {"phone_numbers": NUMBER_TAKEN}
    return business, {}


def defaults() -> SimpleNamespace:
    """A business not yet made, as the form shows it: each column's own default."""
    values = {column.key: column.default.arg if column.default is not None and column.default.is_scalar else None
              for column in Business.__table__.columns}
    return SimpleNamespace(**{**values, "name": "", "working_hours": {}, "phone_numbers": []})
