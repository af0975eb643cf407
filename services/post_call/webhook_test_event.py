"""A test event to a business's webhook, sent now, while the business waits for the answer.

Through the same code as a call's event (webhook.post): the same signing and headers, the same
refusal of anything but a public https address. One attempt, no retries, stored as a webhook
delivery of the business (no job, no call) for the settings page to show.
"""
from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from services.post_call import webhook
from services.settings import Settings
from services.store.models import Business, WebhookDelivery, new_webhook_secret

RECENT = 5  # test deliveries the settings page shows


class NoWebhook(Exception):
    """The business has no webhook URL to send to."""


def send(session: Session, settings: Settings, business: Business) -> WebhookDelivery:
    """Send a test event to `business`'s saved webhook URL; the attempt, added to `session` (the
    caller commits). Commits what is pending first: no transaction stays open while the receiver
    takes up to the webhook timeout to answer."""
    if not business.webhook_url:
        raise NoWebhook(f"business {business.id} has no webhook_url")
    if not business.webhook_secret:
        business.webhook_secret = new_webhook_secret()
    business_id, url, secret = business.id, business.webhook_url, business.webhook_secret
    session.commit()
    event = webhook.build_test_event(business_id)
    attempt = webhook.post(webhook.session(settings.webhook_allow_private, settings.webhook_allow_http), url, secret,
                           event, settings.post_call.webhook_timeout_s, allow_http=settings.webhook_allow_http)
    delivery = WebhookDelivery(job_id=None, call_id=None, business_id=business_id, event_id=event["id"], attempt=1,
                               url=url, status_code=attempt.status_code, ok=attempt.ok, error=attempt.error,
                               duration_ms=attempt.duration_ms)
    session.add(delivery)
    return delivery


def recent(session: Session, business_id: int, limit: int = RECENT) -> list[WebhookDelivery]:
    """The business's latest test deliveries, newest first."""
    return list(session.scalars(
        select(WebhookDelivery).where(WebhookDelivery.business_id == business_id, WebhookDelivery.call_id.is_(None))
        .order_by(WebhookDelivery.id.desc()).limit(limit)))
