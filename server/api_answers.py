"""What the admin API answers: a stored row as the JSON the client sees."""
from __future__ import annotations

import logging
from typing import Any

from flask import current_app

from prompts import build_business_layer
from services import realtime_settings
from services.store.models import ApiKey, Appointment, AuditEntry, Business, Call, Lead, Turn, WebhookDelivery, iso

log = logging.getLogger("api")


def business_json(business: Business) -> dict[str, Any]:
    return {
        "id": business.id,
        "name": business.name,
        # Sorted by id so a PATCH answers in the order a later GET will.
        "phone_numbers": [p.e164 for p in sorted(business.phone_numbers, key=lambda p: p.id)],
        "voice": business.voice,
        "business_prompt": business.business_prompt,
        "greeting": business.greeting,
        "outbound_greeting": business.outbound_greeting,
        "transfer_number": business.transfer_number,
        "transfer_on_shutdown": business.transfer_on_shutdown,
        "transfer_mode": business.transfer_mode,
        "timezone": business.timezone,
        "working_hours": business.working_hours,
        "max_concurrent_calls": business.max_concurrent_calls,
        "use_customer_name": business.use_customer_name,
        "voicemail_message": business.voicemail_message,
        "appointment_minutes": business.appointment_minutes,
        "webhook_url": business.webhook_url,
        # Shown to the admin, who gives it to the receiving system to check signatures.
        "webhook_secret": business.webhook_secret,
        "record_calls": business.record_calls,
        "recording_notice": business.recording_notice,
        # What its calls use: the business's choices over the server's defaults.
        "realtime": realtime_settings.of_business(business.realtime, current_app.config["SETTINGS"], log).as_json(),
        "barge_in_mode": business.barge_in_mode,
        "backchannel_words": list(business.backchannel_words or []),
        # E.g. the prompt was cut to the cap: the owner sees it where they edit the prompt.
        "prompt_warnings": list(build_business_layer(business).warnings),
        "created_at": iso(business.created_at),
        "updated_at": iso(business.updated_at),
    }


def delivery_json(delivery: WebhookDelivery) -> dict[str, Any]:
    """One attempt to deliver an event to a business's webhook."""
    return {"event_id": delivery.event_id, "attempt": delivery.attempt, "url": delivery.url,
            "status_code": delivery.status_code, "ok": delivery.ok, "error": delivery.error,
            "duration_ms": delivery.duration_ms, "at": iso(delivery.created_at)}


def turn_json(turn: Turn) -> dict[str, Any]:
    return {
        "speaker": turn.speaker,
        "text": turn.text,
        "started_at": iso(turn.started_at),
        "interrupted": turn.interrupted,
        "latency_ms": turn.latency_ms,
    }


def call_json(call: Call, *, with_turns: bool = False) -> dict[str, Any]:
    body = {
        "call_sid": call.call_sid,
        "business_id": call.business_id,
        "status": call.status,
        "direction": call.direction,
        "is_test": call.is_test,
        "from": call.from_number,
        "to": call.to_number,
        "started_at": iso(call.started_at),
        "answered_at": iso(call.answered_at),
        "ended_at": iso(call.ended_at),
        "duration_s": call.duration_s,
        "end_reason": call.end_reason,
        "served_by": call.served_by,
        "metrics": call.metrics,
        "usage": call.usage,
        "cost_usd": call.cost_usd,
        "prompt": call.prompt_info,
        "lead_id": call.lead_id,
        "summary": call.summary,
        "extraction": call.extraction,
        "transfer_to": call.transfer_to,
        "transfer_status": call.transfer_status,
        "answered_by": call.answered_by,
    }
    if with_turns:
        body["turns"] = [turn_json(turn) for turn in call.turns]
    return body


def lead_json(lead: Lead) -> dict[str, Any]:
    return {
        "id": lead.id,
        "business_id": lead.business_id,
        "phone": lead.phone,
        "name": lead.name,
        "gender": lead.gender,
        "notes": lead.notes,
        "city": lead.city,
        "last_call_at": iso(lead.last_call_at),
        "callback_requested_at": iso(lead.callback_requested_at),
        "callback_call_sid": lead.callback_call_sid,
        "created_at": iso(lead.created_at),
        "updated_at": iso(lead.updated_at),
    }


def appointment_json(appointment: Appointment) -> dict[str, Any]:
    return {
        "id": appointment.id,
        "business_id": appointment.business_id,
        "starts_at": iso(appointment.starts_at),
        "ends_at": iso(appointment.ends_at),
        "name": appointment.name,
        "phone": appointment.phone,
        "note": appointment.note,
        "call_sid": appointment.call_sid,
        "created_at": iso(appointment.created_at),
    }


def api_key_json(key: ApiKey) -> dict[str, Any]:
    """Never the key itself: only the answer that made it shows it, once."""
    return {
        "id": key.id,
        "business_id": key.business_id,
        "name": key.name,
        "prefix": key.prefix,
        "created_at": iso(key.created_at),
        "last_used_at": iso(key.last_used_at),
        "revoked": key.revoked_at is not None,
        "revoked_at": iso(key.revoked_at),
    }


def audit_entry_json(entry: AuditEntry) -> dict[str, Any]:
    return {
        "id": entry.id,
        "at": iso(entry.at),
        "actor": {"kind": entry.actor, "api_key_id": entry.api_key_id},
        "business_id": entry.business_id,
        "method": entry.method,
        "route": entry.route,
        "object": {"type": entry.object_type, "id": entry.object_id},
        "fields": entry.fields,
        "status": entry.status,
        "client_addr": entry.client_addr,
    }
