"""Business settings: the form saves what the API would and refuses what it would, in its words."""
from __future__ import annotations

import requests

import prompts
from services.store.models import Business, PhoneNumber
from tests.console_client import texts_of
from tests.console_world import api, apart_from_today, business_id, client, console_server  # noqa: F401 (fixtures)

VALID_FORM = {
    "name": "מספרת הים",
    "business_prompt": "מספרה בחיפה.\r\nפתוחים גם בשישי.",
    "greeting": "שלום, הגעתם למספרת הים",
    "outbound_greeting": "שלום, מדברים ממספרת הים",
    "voice": "coral",
    "timezone": "Asia/Jerusalem",
    "phone_numbers": "+972300000001\r\n+972300000002\r\n",
    "transfer_number": "+972501112222",
    "max_concurrent_calls": "3",
    "appointment_minutes": "45",
    "voicemail_message": "",
    "hours_sun": "09:00-13:00, 16:00-19:00",
    "hours_mon": "",
    "hours_fri": " 08:00 - 12:00 ",
    "webhook_url": "https://hooks.example/calls",
    "webhook_secret": "",
    "use_customer_name": "on",
    "record_calls": "on",
}


def save(client, business_id: int, form: dict) -> requests.Response:
    path = f"/console/businesses/{business_id}"
    return client.post(path, form, csrf_from=path)


def field_errors(page: str) -> dict[str, str]:
    return dict(zip(texts_of(page, r'class="field-error" id="error-(\w+)"'),
                    texts_of(page, r'class="field-error" id="error-\w+" data-field="\w+">([^<]*)<')))


def test_valid_settings_are_saved_as_the_api_then_shows_them(console_server, business_id, client):
    answer = save(client, business_id, VALID_FORM)
    assert answer.status_code == 302, field_errors(answer.text)
    stored = api(console_server, "GET", f"/api/businesses/{business_id}").json()
    assert stored["name"] == "מספרת הים"
    assert stored["business_prompt"] == "מספרה בחיפה.\nפתוחים גם בשישי.", "a textarea's CRLF is stored as a new line"
    assert stored["phone_numbers"] == ["+972300000001", "+972300000002"]
    assert (stored["voice"], stored["max_concurrent_calls"], stored["appointment_minutes"]) == ("coral", 3, 45)
    assert stored["working_hours"] == {"sun": [["09:00", "13:00"], ["16:00", "19:00"]], "fri": [["08:00", "12:00"]]}
    assert (stored["use_customer_name"], stored["record_calls"], stored["recording_notice"],
            stored["transfer_on_shutdown"]) == (True, True, False, False)
    assert stored["webhook_url"] == "https://hooks.example/calls" and stored["transfer_number"] == "+972501112222"
    assert stored["webhook_secret"].startswith("whsec_"), "an empty secret field leaves the secret as it was"
    page = client.get(f"/console/businesses/{business_id}").text
    assert "ההגדרות נשמרו" in page
    assert texts_of(page, r'id="current-webhook-secret">([^<]*)<') == [stored["webhook_secret"]]
    assert save(client, business_id, {**VALID_FORM, "webhook_secret": "whsec_" + "a" * 20}).status_code == 302
    assert api(console_server, "GET", f"/api/businesses/{business_id}").json()["webhook_secret"] == "whsec_" + "a" * 20


def test_invalid_settings_are_refused_with_the_apis_own_messages(console_server, business_id, client):
    before = api(console_server, "GET", f"/api/businesses/{business_id}").json()
    form = {**VALID_FORM, "name": "  ", "max_concurrent_calls": "0", "appointment_minutes": "many",
            "voice": "robot", "timezone": "Mars/Olympus", "transfer_number": "050-123",
            "webhook_url": "http://hooks.example/calls", "hours_mon": "10:00-09:00",
            "phone_numbers": "+972300000001\n+972300000001", "webhook_secret": "short",
            "business_prompt": "x" * 20_001}
    answer = save(client, business_id, form)
    assert answer.status_code == 422
    shown = field_errors(answer.text)
    body = {"name": "  ", "max_concurrent_calls": 0, "appointment_minutes": "many", "voice": "robot",
            "timezone": "Mars/Olympus", "transfer_number": "050-123", "webhook_url": "http://hooks.example/calls",
            "working_hours": {"sun": [["09:00", "13:00"], ["16:00", "19:00"]], "mon": [["10:00", "09:00"]],
                              "fri": [["08:00", "12:00"]]},
            "phone_numbers": ["+972300000001", "+972300000001"],
            "webhook_secret": "short", "business_prompt": "x" * 20_001}
    refused = api(console_server, "PATCH", f"/api/businesses/{business_id}", json=body)
    assert refused.status_code == 422
    assert shown == refused.json()["fields"]
    assert len(shown) == 11
    assert api(console_server, "GET", f"/api/businesses/{business_id}").json() == before, "nothing was saved"
    # The page keeps what was typed, to fix it.
    assert 'value="Mars/Olympus"' in answer.text


def test_hours_that_are_not_ranges_are_named_as_the_api_names_them(console_server, business_id, client):
    answer = save(client, business_id, {**VALID_FORM, "hours_sun": "", "hours_fri": "", "hours_tue": "mornings"})
    assert answer.status_code == 422
    refused = api(console_server, "PATCH", f"/api/businesses/{business_id}", json={"working_hours": {"tue": [["mornings"]]}})
    assert field_errors(answer.text) == {"working_hours": refused.json()["fields"]["working_hours"]}
    assert 'value="mornings"' in answer.text


def test_a_number_of_another_business_is_refused_as_the_api_refuses_it(console_server, business_id, client):
    with console_server.db.session() as session:
        other = Business(name="אחר", phone_numbers=[PhoneNumber(e164="+972300000009")])
        session.add(other)
        session.flush()
        other_id = other.id
    answer = save(client, business_id, {**VALID_FORM, "phone_numbers": "+972300000009"})
    assert answer.status_code == 422
    refused = api(console_server, "PATCH", f"/api/businesses/{business_id}", json={"phone_numbers": ["+972300000009"]})
    assert refused.status_code == 409
    assert field_errors(answer.text) == {"phone_numbers": refused.json()["error"]}
    assert f"business {other_id}" in refused.json()["error"]


def test_a_form_without_csrf_saves_nothing(console_server, business_id, client):
    answer = client.post(f"/console/businesses/{business_id}", VALID_FORM, csrf_from=None)
    assert answer.status_code == 400
    assert api(console_server, "GET", f"/api/businesses/{business_id}").json()["name"] == "מספרה"


def test_the_preview_is_the_prompt_the_next_call_gets(console_server, business_id, client):
    assert save(client, business_id, VALID_FORM).status_code == 302
    page = client.get(f"/console/businesses/{business_id}").text
    preview = api(console_server, "GET", f"/api/businesses/{business_id}/prompt-preview").json()
    [business_layer] = texts_of(page, r'data-layer="inbound-business">(.*?)</pre>')
    assert business_layer == preview["layers"]["business"]["text"].strip()
    assert "פתוחים גם בשישי." in business_layer
    [meter] = texts_of(page, r'id="prompt-meter"[^>]*>([^<]*)<')
    count = len(VALID_FORM["business_prompt"].replace("\r\n", "\n"))
    assert meter == f"{count} מתוך {prompts.BUSINESS_PROMPT_CAP} תווים"
    assert texts_of(page, r'id="hours_sun" name="hours_sun" value="([^"]*)"') == ["09:00-13:00, 16:00-19:00"]
    assert texts_of(page, r'id="hours_fri" name="hours_fri" value="([^"]*)"') == ["08:00-12:00"]
    assert texts_of(page, r'id="hours_sat" name="hours_sat" value="([^"]*)"') == [""]


def test_the_preview_follows_the_form_unsaved(console_server, business_id, client):
    path = f"/console/businesses/{business_id}"
    draft = {**VALID_FORM, "business_prompt": "טיוטה שלא נשמרה.", "recording_notice": "on"}
    answer = client.post(f"{path}/preview", draft, csrf_from=path)
    assert answer.status_code == 200
    previews = answer.json()
    assert "טיוטה שלא נשמרה." in previews["inbound"]["layers"]["business"]["text"]
    assert previews["inbound"]["greeting"].startswith("שלום, הגעתם למספרת הים")
    assert previews["inbound"]["greeting"] != VALID_FORM["greeting"], "the recording notice follows the greeting"
    assert set(previews) == {"inbound", "outbound"}
    stored = api(console_server, "GET", f"/api/businesses/{business_id}").json()
    assert stored["business_prompt"] == "" and stored["name"] == "מספרה", "a preview saves nothing"
    # The same builder as the API's preview: saved, the two agree.
    assert save(client, business_id, draft).status_code == 302
    saved = api(console_server, "GET", f"/api/businesses/{business_id}/prompt-preview").json()
    assert apart_from_today(saved) == apart_from_today(previews["inbound"])



def test_the_preview_refuses_an_invalid_draft_and_a_missing_csrf_token(business_id, client):
    path = f"/console/businesses/{business_id}"
    answer = client.post(f"{path}/preview", {**VALID_FORM, "name": " "}, csrf_from=path)
    assert answer.status_code == 422 and answer.json()["fields"] == {"name": "must not be empty"}
    assert client.post(f"{path}/preview", VALID_FORM, csrf_from=None).status_code == 400


def test_holiday_and_eve_hours_are_saved_closed_or_left_to_the_calendar(console_server, business_id, client):
    answer = save(client, business_id, {**VALID_FORM, "hours_holiday": "10:00-12:00", "hours_eve": "סגור"})
    assert answer.status_code == 302, field_errors(answer.text)
    hours = api(console_server, "GET", f"/api/businesses/{business_id}").json()["working_hours"]
    assert (hours["holiday"], hours["eve"]) == ([["10:00", "12:00"]], [])
    page = client.get(f"/console/businesses/{business_id}").text
    assert 'name="hours_holiday" value="10:00-12:00"' in page and 'name="hours_eve" value="סגור"' in page
    assert save(client, business_id, {**VALID_FORM, "hours_holiday": "", "hours_eve": ""}).status_code == 302
    hours = api(console_server, "GET", f"/api/businesses/{business_id}").json()["working_hours"]
    assert "holiday" not in hours and "eve" not in hours, "empty: the calendar's default"
