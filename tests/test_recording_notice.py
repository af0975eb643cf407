"""A business may have the greeting tell the caller that the call is recorded (`recording_notice`):
said only when recording is on, after the greeting, in Hebrew."""
from __future__ import annotations

from types import SimpleNamespace

import requests

from prompts import build_greeting_layer
from prompts.layers import greeting_text

NOTICE = "השיחה מוקלטת."
GREETING = "שלום, הגעתם למספרת הבדיקה, איך אפשר לעזור?"


def business(**fields):
    values = dict(name="מספרת הבדיקה", business_prompt="", greeting=GREETING, outbound_greeting="",
                  use_customer_name=True, record_calls=True, recording_notice=False)
    values.update(fields)
    return SimpleNamespace(**values)


def test_the_notice_follows_the_greeting_when_asked_for_and_recording_is_on():
    assert greeting_text(business(recording_notice=True), "inbound") == f"{GREETING} {NOTICE}"
    assert build_greeting_layer(business(recording_notice=True), "inbound").text.endswith(f"{GREETING} {NOTICE}")
    outbound = greeting_text(business(recording_notice=True), "outbound")
    assert outbound.endswith(NOTICE) and outbound != NOTICE


def test_no_notice_by_default_or_when_the_call_is_not_recorded():
    assert greeting_text(business(), "inbound") == GREETING
    assert greeting_text(business(recording_notice=True, record_calls=False), "inbound") == GREETING
    assert greeting_text(SimpleNamespace(name="x", greeting=GREETING), "inbound") == GREETING


def test_the_setting_goes_through_the_businesses_api(live_server):
    base = f"{live_server.base_url}/api/businesses"
    created = requests.post(base, json={"name": "עסק"}, timeout=5).json()
    assert created["recording_notice"] is False
    patched = requests.patch(f"{base}/{created['id']}", json={"recording_notice": True}, timeout=5)
    assert patched.status_code == 200 and patched.json()["recording_notice"] is True
    assert requests.get(f"{base}/{created['id']}", timeout=5).json()["recording_notice"] is True
    bad = requests.patch(f"{base}/{created['id']}", json={"recording_notice": "yes"}, timeout=5)
    assert bad.status_code == 422 and set(bad.json()["fields"]) == {"recording_notice"}
