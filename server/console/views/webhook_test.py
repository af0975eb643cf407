"""Send a test event from a business's settings: signed and refused as a call's event is, the
attempt stored and its result (status code or error) shown on the page."""
from __future__ import annotations

import logging

from flask import current_app, flash, redirect, url_for

from server.console import auditing, labels
from server.console.blueprint import bp
from server.console.views.business import viewed_business
from server.request_db import request_session
from services.post_call import webhook_test_event
from services.store import audit
from services.store.models import WebhookDelivery

log = logging.getLogger("console")


@bp.post("/businesses/<int:business_id>/webhook-test")
def webhook_test(business_id: int):
    session = request_session()
    business = viewed_business(business_id)
    back = redirect(url_for("console.business_settings", business_id=business_id, _anchor="webhook-test"))
    try:
        delivery = webhook_test_event.send(session, current_app.config["SETTINGS"], business)
    except webhook_test_event.NoWebhook:
        flash(labels.t("webhook_test_no_url"), "error")
        return back
    auditing.note(session, audit.Change("business", business_id, business_id, ("webhook_test",)), status=302)
    session.commit()
    log.info("webhook test event sent from the console", extra={
        "business_id": business_id, "event_id": delivery.event_id, "ok": delivery.ok,
        "status_code": delivery.status_code})
    flash(outcome(delivery), "ok" if delivery.ok else "error")
    return back


def outcome(delivery: WebhookDelivery) -> str:
    if delivery.ok:
        return labels.t("webhook_test_delivered", status=delivery.status_code, ms=round(delivery.duration_ms or 0))
    # The error is the transport's English: isolated, so that it reads whole inside a Hebrew sentence.
    return labels.t("webhook_test_failed", error=f"\u2068{delivery.error or ''}\u2069")


@bp.app_template_global()
def recent_webhook_tests(business_id: int) -> list[WebhookDelivery]:
    """For the settings page: the business's latest test deliveries (the business is the viewer's)."""
    return webhook_test_event.recent(request_session(), business_id)
