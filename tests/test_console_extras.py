"""The console's new-business form and the webhook's test event (both doors: the console and the
API), over loopback: a real webhook receiver that checks signatures as a business would."""
from __future__ import annotations

import html
from datetime import timedelta

import pytest
import requests
from sqlalchemy import select

from server.api_schemas import BusinessCreate
from services.store.models import AuditEntry, Business, Call, PhoneNumber, Turn, WebhookDelivery, utcnow
from tests.console_client import ADMIN_TOKEN, ConsoleClient, business_key, israel_time, listed_call_sids, texts_of
from tests.fakes.webhook_receiver import WebhookReceiver
from tests.test_console_settings import VALID_FORM, field_errors

SECRET = "whsec_console_test_0123456789"


@pytest.fixture
def receiver():
    receiver = WebhookReceiver(SECRET).start()
    yield receiver
    receiver.stop()


@pytest.fixture
def make_console(make_live_server, settings):
    """A console server; by default its webhooks may reach the loopback receiver (the delivery tests' switches)."""
    def make(**changes):
        changes = {"admin_api_token": ADMIN_TOKEN, "webhook_allow_http": True, "webhook_allow_private": True, **changes}
        return make_live_server(settings.replace(**changes))
    return make


@pytest.fixture
def console_server(make_console):
    return make_console()


def add_business(live, **fields) -> int:
    with live.db.session() as session:
        business = Business(**{"name": "מספרה", "webhook_secret": SECRET, **fields})
        session.add(business)
        session.flush()
        return business.id


def admin_client(live) -> ConsoleClient:
    client = ConsoleClient(live.base_url)
    assert client.sign_in().status_code == 302
    return client


def api(live, method: str, path: str, token: str = ADMIN_TOKEN, **kwargs) -> requests.Response:
    return requests.request(method, live.base_url + path, headers={"Authorization": f"Bearer {token}"},
                            timeout=15, **kwargs)


def send_test(client: ConsoleClient, business_id: int) -> requests.Response:
    settings = f"/console/businesses/{business_id}"
    return client.post(f"{settings}/webhook-test", csrf_from=settings)


def stored_tests(live, business_id: int) -> list[WebhookDelivery]:
    with live.db.session() as session:
        rows = list(session.scalars(select(WebhookDelivery).where(WebhookDelivery.business_id == business_id)
                                    .order_by(WebhookDelivery.id)))
        session.expunge_all()
        return rows


def audit_rows(live, route: str) -> list[AuditEntry]:
    with live.db.session() as session:
        rows = list(session.scalars(select(AuditEntry).where(AuditEntry.route == route).order_by(AuditEntry.id)))
        session.expunge_all()
        return rows


def flashes(page: str) -> list[str]:
    """The page's messages, without the bidi isolates around the English of an error."""
    return [text.replace("\u2068", "").replace("\u2069", "")
            for text in texts_of(page, r'<p class="flash \w+" role="status">(.*?)</p>')]


# --- the webhook's test event -------------------------------------------------------------

def test_the_test_event_reaches_the_receiver_signed_is_stored_and_shown(console_server, receiver):
    business_id = add_business(console_server, webhook_url=receiver.url)
    client = admin_client(console_server)
    page = client.get(f"/console/businesses/{business_id}").text
    assert 'id="send-webhook-test"' in page and "webhook-tests" not in page

    answer = send_test(client, business_id)
    assert answer.status_code == 302
    assert answer.headers["Location"].endswith(f"/console/businesses/{business_id}#webhook-test")
    [got] = receiver.received
    assert got.signature_ok, "signed with the business's secret, as a call's event is"
    assert got.event["type"] == "test" and got.event["business_id"] == business_id
    assert got.headers["X-Agent-Event"] == "test" and got.headers["X-Agent-Event-Id"] == got.event["id"]
    assert got.headers["Content-Type"] == "application/json; charset=utf-8"
    [row] = stored_tests(console_server, business_id)
    assert (row.event_id, row.ok, row.status_code, row.error, row.url) == (got.event["id"], True, 200, None, receiver.url)
    assert row.call_id is None and row.job_id is None

    page = client.get(f"/console/businesses/{business_id}").text
    assert flashes(page) == [f"אירוע הבדיקה התקבל: HTTP 200, {round(row.duration_ms)} מ״ש"]
    assert texts_of(page, r'<tr data-event-id="([^"]+)"') == [row.event_id]

    # The receiver refuses the next one: the page says so, and keeps both, newest first.
    receiver.answer_next(500)
    send_test(client, business_id)
    page = client.get(f"/console/businesses/{business_id}").text
    assert flashes(page) == ["אירוע הבדיקה לא נמסר: HTTP 500"]
    assert "\u2068HTTP 500\u2069" in page, "the English reads whole inside the Hebrew"
    rows = stored_tests(console_server, business_id)
    assert [(r.ok, r.status_code) for r in rows] == [(True, 200), (False, 500)]
    assert texts_of(page, r'<tr data-event-id="([^"]+)"') == [rows[1].event_id, rows[0].event_id]
    [entry, _] = audit_rows(console_server, "/console/businesses/<int:business_id>/webhook-test")
    assert (entry.actor, entry.business_id, entry.object_id, entry.fields) == ("admin", business_id, str(business_id),
                                                                                ["webhook_test"])


def test_a_url_that_is_not_public_is_refused_with_the_reason_shown(make_console, receiver):
    live = make_console(webhook_allow_private=False, webhook_allow_http=False)
    on_loopback = add_business(live, webhook_url="https://localhost:9/hooks/calls")
    plain_http = add_business(live, webhook_url=receiver.url)  # stored before the setting was turned off
    client = admin_client(live)

    send_test(client, on_loopback)
    shown = flashes(client.get(f"/console/businesses/{on_loopback}").text)
    assert len(shown) == 1 and shown[0].startswith("אירוע הבדיקה לא נמסר: refused: localhost resolves to ")
    assert "a loopback address, not a public one" in shown[0]
    [row] = stored_tests(live, on_loopback)
    assert not row.ok and row.status_code is None and row.error == shown[0].split(": ", 1)[1]

    send_test(client, plain_http)
    shown = flashes(client.get(f"/console/businesses/{plain_http}").text)
    assert shown == ["אירוע הבדיקה לא נמסר: refused: the webhook URL must be https:// (WEBHOOK_ALLOW_HTTP is off)"]
    assert receiver.received == []


def test_without_a_webhook_url_there_is_nothing_to_send(console_server):
    business_id = add_business(console_server, webhook_url=None)
    client = admin_client(console_server)
    page = client.get(f"/console/businesses/{business_id}").text
    assert 'id="webhook-test-no-url"' in page and 'id="send-webhook-test" disabled' in page
    send_test(client, business_id)
    assert flashes(client.get(f"/console/businesses/{business_id}").text) == [
        "אין כתובת Webhook שמורה; שמרו כתובת ואז שלחו בדיקה."]
    assert stored_tests(console_server, business_id) == []
    answer = api(console_server, "POST", f"/api/businesses/{business_id}/webhook-test")
    assert answer.status_code == 409 and "no webhook_url" in answer.json()["error"]


def test_the_api_sends_a_test_event_stores_and_audits_it(console_server, receiver):
    business_id = add_business(console_server, webhook_url=receiver.url)
    other = add_business(console_server, name="אחר", webhook_url=receiver.url)
    answer = api(console_server, "POST", f"/api/businesses/{business_id}/webhook-test")
    assert answer.status_code == 200, answer.text
    body = answer.json()
    [got] = receiver.accepted()
    assert body["event_id"] == got.event["id"] and got.event["type"] == "test"
    assert (body["ok"], body["status_code"], body["error"], body["url"], body["attempt"]) == (
        True, 200, None, receiver.url, 1)
    assert [r.event_id for r in stored_tests(console_server, business_id)] == [body["event_id"]]
    log = api(console_server, "GET", "/api/audit-log").json()["audit_log"]
    assert log[0]["route"] == "/api/businesses/<int:business_id>/webhook-test"
    assert (log[0]["object"], log[0]["fields"], log[0]["status"]) == (
        {"type": "business", "id": str(business_id)}, ["webhook_test"], 200)

    key = business_key(console_server, business_id)
    assert api(console_server, "POST", f"/api/businesses/{business_id}/webhook-test", key).status_code == 200
    assert api(console_server, "POST", f"/api/businesses/{other}/webhook-test", key).status_code == 404
    assert len(receiver.received) == 2, "another business's webhook was not sent to"


def test_the_test_event_wants_its_csrf_token(console_server, receiver):
    business_id = add_business(console_server, webhook_url=receiver.url)
    client = admin_client(console_server)
    answer = client.post(f"/console/businesses/{business_id}/webhook-test", csrf_from=None)
    assert answer.status_code == 400 and "אסימון אבטחה" in answer.text
    assert receiver.received == [] and stored_tests(console_server, business_id) == []


# --- a new business ------------------------------------------------------------------------

NEW_FORM = {**VALID_FORM, "name": "מוסך הצפון", "phone_numbers": "+972300000011\r\n+972300000012",
            "hours_holiday": "סגור", "hours_eve": "08:00-12:00", "voicemail_message": "חזרו אלינו בבקשה",
            "webhook_secret": "whsec_" + "b" * 24, "recording_notice": "on", "transfer_on_shutdown": "on",
            "use_customer_name": "", "rt_model": "gpt-realtime-mini", "rt_speed": "1.1",
            "transfer_mode": "cold", "barge_in_mode": "immediate", "backchannel_words": "יאללה\r\nסבבה"}
NEW_BODY = {"name": "מוסך הצפון", "business_prompt": "מספרה בחיפה.\nפתוחים גם בשישי.",
            "greeting": "שלום, הגעתם למספרת הים", "outbound_greeting": "שלום, מדברים ממספרת הים",
            "voice": "coral", "timezone": "Asia/Jerusalem", "phone_numbers": ["+972300000011", "+972300000012"],
            "transfer_number": "+972501112222", "max_concurrent_calls": 3, "appointment_minutes": 45,
            "voicemail_message": "חזרו אלינו בבקשה",
            "working_hours": {"sun": [["09:00", "13:00"], ["16:00", "19:00"]], "fri": [["08:00", "12:00"]],
                              "holiday": [], "eve": [["08:00", "12:00"]]},
            "webhook_url": "https://hooks.example/calls", "webhook_secret": "whsec_" + "b" * 24,
            "use_customer_name": False, "record_calls": True, "recording_notice": True, "transfer_on_shutdown": True,
            "transfer_mode": "cold", "barge_in_mode": "immediate", "backchannel_words": ["יאללה", "סבבה"]}


def create(client: ConsoleClient, form: dict) -> requests.Response:
    return client.post("/console/businesses/new", form, csrf_from="/console/businesses/new")


def test_a_new_business_from_the_form_is_what_the_api_shows_with_every_field(console_server):
    client = admin_client(console_server)
    listing = client.get("/console/businesses").text
    assert 'id="new-business" href="/console/businesses/new"' in listing
    form = client.get("/console/businesses/new")
    assert form.status_code == 200 and 'action="/console/businesses/new"' in form.text
    assert 'id="prompt-preview"' not in form.text and 'id="webhook-test"' not in form.text
    # The form starts at the defaults a business gets from the API.
    assert 'id="max_concurrent_calls" name="max_concurrent_calls" value="5"' in form.text
    assert 'name="use_customer_name" checked' in form.text

    answer = create(client, NEW_FORM)
    assert answer.status_code == 302, field_errors(answer.text)
    business_id = int(answer.headers["Location"].rsplit("/", 1)[1])
    stored = api(console_server, "GET", f"/api/businesses/{business_id}").json()
    assert {name: stored[name] for name in NEW_BODY} == NEW_BODY
    assert (stored["realtime"]["model"], stored["realtime"]["speed"]) == ("gpt-realtime-mini", 1.1)
    # Everything the create API takes, the form set (the rest of the answer is the server's own).
    assert set(NEW_BODY) | {"realtime"} == set(BusinessCreate.model_fields)
    page = client.get(answer.headers["Location"]).text
    assert flashes(page) == ["העסק נוצר"] and "מוסך הצפון" in page
    [entry] = audit_rows(console_server, "/console/businesses/new")
    assert (entry.actor, entry.business_id, entry.object_type, entry.status) == ("admin", business_id, "business", 302)
    assert [f for f in entry.fields if not f.startswith("realtime.")] == sorted(NEW_BODY)
    assert {"realtime.model", "realtime.speed"} <= set(entry.fields)


def test_a_new_business_with_defaults_is_the_apis_default_business(console_server):
    client = admin_client(console_server)
    page = client.get("/console/businesses/new").text
    defaults = dict(zip(texts_of(page, r'<input type="text" id="(\w+)"'),
                        texts_of(page, r'<input type="text" id="\w+" name="\w+" value="([^"]*)"')))
    checked = texts_of(page, r'name="(\w+)" checked')
    form = {**defaults, "name": "ברירות מחדל", **dict.fromkeys(checked, "on"),
            **{name: html.unescape(text) for name, text in
               zip(texts_of(page, r'<textarea id="(\w+)"'), texts_of(page, r'<textarea id="\w+"[^>]*>([^<]*)<'))},
            "voice": "alloy"}
    answer = create(client, form)
    assert answer.status_code == 302, field_errors(answer.text)
    made = api(console_server, "GET", answer.headers["Location"].replace("/console/", "/api/")).json()
    by_api = api(console_server, "POST", "/api/businesses", json={"name": "ברירות מחדל"}).json()
    different = {k for k in made if made[k] != by_api[k]}
    assert different == {"id", "webhook_secret", "created_at", "updated_at"}


def test_invalid_input_shows_the_errors_the_api_gives(console_server):
    client = admin_client(console_server)
    form = {**NEW_FORM, "name": " ", "max_concurrent_calls": "0", "voice": "robot", "timezone": "Mars/Olympus",
            "webhook_url": "ftp://hooks.example", "hours_eve": "13:00-12:00", "phone_numbers": "0501234567"}
    answer = create(client, form)
    assert answer.status_code == 422
    body = {**NEW_BODY, "name": " ", "max_concurrent_calls": 0, "voice": "robot", "timezone": "Mars/Olympus",
            "webhook_url": "ftp://hooks.example", "phone_numbers": ["0501234567"],
            "working_hours": {**NEW_BODY["working_hours"], "eve": [["13:00", "12:00"]]}}
    refused = api(console_server, "POST", "/api/businesses", json=body)
    assert refused.status_code == 422
    assert field_errors(answer.text) == refused.json()["fields"]
    assert len(refused.json()["fields"]) == 7
    assert flashes(answer.text) == ["העסק לא נוצר: יש שדות לתקן"]
    assert 'value="Mars/Olympus"' in answer.text, "what was typed stays, to fix it"
    assert api(console_server, "GET", "/api/businesses").json()["businesses"] == []


def test_a_number_of_another_business_is_refused_as_the_api_refuses_it(console_server):
    with console_server.db.session() as session:
        session.add(Business(name="קיים", phone_numbers=[PhoneNumber(e164="+972300000012")]))
    client = admin_client(console_server)
    answer = create(client, NEW_FORM)
    assert answer.status_code == 422
    refused = api(console_server, "POST", "/api/businesses", json=NEW_BODY)
    assert refused.status_code == 409
    assert field_errors(answer.text) == {"phone_numbers": refused.json()["error"]}
    assert [b["name"] for b in api(console_server, "GET", "/api/businesses").json()["businesses"]] == ["קיים"]
    assert audit_rows(console_server, "/console/businesses/new") == []


def test_a_business_key_may_not_create_businesses(console_server):
    mine = add_business(console_server)
    client = ConsoleClient(console_server.base_url)
    assert client.sign_in(business_key(console_server, mine)).status_code == 302
    assert client.get("/console/businesses/new").status_code == 403
    answer = client.post("/console/businesses/new", NEW_FORM, csrf_from=f"/console/businesses/{mine}")
    assert answer.status_code == 403
    assert "new-business" not in client.get(f"/console/businesses/{mine}").text
    assert [b["id"] for b in api(console_server, "GET", "/api/businesses").json()["businesses"]] == [mine]


def test_the_new_business_form_wants_its_csrf_token(console_server):
    client = admin_client(console_server)
    answer = client.post("/console/businesses/new", NEW_FORM, csrf_from=None)
    assert answer.status_code == 400 and "אסימון אבטחה" in answer.text
    assert api(console_server, "GET", "/api/businesses").json()["businesses"] == []


# --- one rule for both doors ---------------------------------------------------------------

def test_a_business_key_sets_in_the_console_what_the_api_lets_it_set(console_server):
    mine = add_business(console_server, phone_numbers=[PhoneNumber(e164="+972300000021")])
    client = ConsoleClient(console_server.base_url)
    client.sign_in(business_key(console_server, mine))
    path = f"/console/businesses/{mine}"
    page = client.get(path).text
    assert 'name="phone_numbers" rows="3" dir="ltr" disabled' in page
    assert 'name="max_concurrent_calls" value="5" dir="ltr" disabled' in page
    # What the page posts (disabled fields are not sent) saves.
    form = {k: v for k, v in VALID_FORM.items() if k not in ("phone_numbers", "max_concurrent_calls")}
    assert client.post(path, form, csrf_from=path).status_code == 302
    # The numbers, posted anyway, are the admin's: refused as the API refuses them.
    answer = client.post(path, {**form, "phone_numbers": "+972300000022", "name": "אחר"}, csrf_from=path)
    assert answer.status_code == 422
    refused = api(console_server, "PATCH", f"/api/businesses/{mine}", business_key(console_server, mine),
                  json={"phone_numbers": ["+972300000022"]})
    assert refused.status_code == 403
    assert field_errors(answer.text) == {"phone_numbers": refused.json()["error"]}
    # Another field wrong: the page shows the admin's fields as stored, not as the post left them (absent).
    answer = client.post(path, {**form, "voice": "robot"}, csrf_from=path)
    assert answer.status_code == 422 and set(field_errors(answer.text)) == {"voice"}
    assert '+972300000021</textarea>' in answer.text and 'value="5" dir="ltr" disabled' in answer.text
    stored = api(console_server, "GET", f"/api/businesses/{mine}").json()
    assert stored["phone_numbers"] == ["+972300000021"] and stored["name"] == VALID_FORM["name"]
    [entry] = audit_rows(console_server, "/console/businesses/<int:business_id>")
    assert (entry.actor, entry.api_key_id is not None, entry.business_id) == ("key", True, mine)


def test_reprocess_from_the_console_is_audited_as_from_the_api(console_server):
    business_id = add_business(console_server)
    with console_server.db.session() as session:
        started = utcnow() - timedelta(minutes=5)
        session.add(Call(call_sid="CAextras", business_id=business_id, status="completed", started_at=started,
                         ended_at=started + timedelta(seconds=30)))
    client = admin_client(console_server)
    path = "/console/calls/CAextras"
    assert client.post(f"{path}/reprocess", csrf_from=path).status_code == 302
    [entry] = audit_rows(console_server, "/console/calls/<call_sid>/reprocess")
    assert (entry.object_type, entry.object_id, entry.fields, entry.business_id) == (
        "call", "CAextras", ["post_call"], business_id)
    answer = api(console_server, "POST", "/api/calls/CAextras/reprocess")
    assert answer.status_code == 202 and answer.json()["post_call"]["status"] == "queued"


# --- the history's transcript search, narrowed by the other filters first -------------------

def test_search_lists_a_call_once_however_often_it_was_said_and_keeps_the_other_filters(console_server):
    mine, other = add_business(console_server), add_business(console_server, name="אחר")
    with console_server.db.session() as session:
        for sid, business_id, day, said in (("CAtwice", mine, "2025-03-04 10:00", ["תור למחר", "כן, תור בעשר"]),
                                            ("CAold", mine, "2025-02-01 10:00", ["תור"]),
                                            ("CAother", other, "2025-03-04 11:00", ["תור"]),
                                            ("CAnone", mine, "2025-03-05 10:00", ["שלום"])):
            started = israel_time(day)
            call = Call(call_sid=sid, business_id=business_id, status="completed", started_at=started)
            call.turns = [Turn(speaker="caller", text=text, started_at=started) for text in said]
            session.add(call)
    client = admin_client(console_server)

    def listed(query: str) -> list[str]:
        return listed_call_sids(client.get("/console/calls" + query).text)

    assert listed("?q=תור") == ["CAother", "CAtwice", "CAold"]
    assert listed(f"?q=תור&business_id={mine}") == ["CAtwice", "CAold"]
    assert listed(f"?q=תור&business_id={mine}&date_from=2025-03-01") == ["CAtwice"]
    assert listed("?q=בעשר&date_to=2025-03-03") == []
