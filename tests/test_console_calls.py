"""Call history (filters, transcript search, pages) and the call page, over a real socket."""
from __future__ import annotations

import dataclasses
from datetime import timedelta

import pytest
import requests
from flask import Response, request

from server.console.views.calls import PAGE_SIZE
from services.store.models import Business, Call, Job, Turn, WebhookDelivery
from tests.console_client import ADMIN_TOKEN, ConsoleClient, israel_time, listed_call_sids, texts_of
from tests.fakes.twilio_rest import FakeTwilioRest


@pytest.fixture
def console_server(make_live_server, settings):
    return make_live_server(dataclasses.replace(settings, admin_api_token=ADMIN_TOKEN))


@pytest.fixture
def client(console_server) -> ConsoleClient:
    client = ConsoleClient(console_server.base_url)
    assert client.sign_in().status_code == 302
    return client


def store_calls(live) -> dict[str, int]:
    """Two businesses' calls on known days (Israel's clock), each with turns; their ids."""
    with live.db.session() as session:
        salon, clinic = Business(name="מספרה"), Business(name="מרפאה")
        session.add_all([salon, clinic])
        session.flush()
        rows = [
            ("CAin1", salon, "inbound", "completed", "caller_hangup", "2025-03-04 00:30", "אני רוצה לקבוע תור לתספורת"),
            ("CAin2", salon, "inbound", "completed", "transfer", "2025-03-04 10:00", "אפשר לדבר עם נציג"),
            ("CAout", salon, "outbound", "completed", "agent_hangup", "2025-03-03 23:50", "שלום, מדברים מהמספרה"),
            ("CAbusy", salon, "outbound", "busy", "busy", "2025-03-02 12:00", ""),
            ("CAclinic", clinic, "inbound", "completed", "caller_hangup", "2025-03-04 11:00", "תור לרופא שיניים"),
            ("CA100%", clinic, "inbound", "completed", "limit", "2025-03-01 09:00", "הנחה של 100% על תור_"),
        ]
        for sid, business, direction, status, reason, started, said in rows:
            call = Call(call_sid=sid, business_id=business.id, direction=direction, status=status, end_reason=reason,
                        started_at=israel_time(started), from_number="+972501234567", to_number="+972300000001")
            if said:
                call.turns = [Turn(speaker="agent", text="שלום, במה אפשר לעזור?", started_at=israel_time(started)),
                              Turn(speaker="caller", text=said, started_at=israel_time(started) + timedelta(seconds=3))]
            session.add(call)
        return {"salon": salon.id, "clinic": clinic.id}


def listed(client, query: str = "") -> list[str]:
    answer = client.get("/console/calls" + query)
    assert answer.status_code == 200, answer.text[-500:]
    return listed_call_sids(answer.text)


def test_history_lists_newest_first_and_filters_by_each_field(client, console_server):
    ids = store_calls(console_server)
    assert listed(client) == ["CAclinic", "CAin2", "CAin1", "CAout", "CAbusy", "CA100%"]
    assert listed(client, f"?business_id={ids['clinic']}") == ["CAclinic", "CA100%"]
    assert listed(client, "?direction=outbound") == ["CAout", "CAbusy"]
    assert listed(client, "?status=busy") == ["CAbusy"]
    assert listed(client, "?end_reason=transfer") == ["CAin2"]
    assert listed(client, f"?business_id={ids['salon']}&direction=inbound&end_reason=caller_hangup") == ["CAin1"]


def test_dates_are_days_on_israels_clock(client, console_server):
    store_calls(console_server)
    # CAin1 started at 00:30 on the 4th in Israel, which is still the 3rd in UTC; CAout at 23:50 on the 3rd.
    assert listed(client, "?date_from=2025-03-04&date_to=2025-03-04") == ["CAclinic", "CAin2", "CAin1"]
    assert listed(client, "?date_to=2025-03-03") == ["CAout", "CAbusy", "CA100%"]
    assert listed(client, "?date_from=2025-03-02&date_to=2025-03-03") == ["CAout", "CAbusy"]


def test_search_finds_calls_by_what_was_said(client, console_server):
    store_calls(console_server)
    assert listed(client, "?q=תור") == ["CAclinic", "CAin1", "CA100%"]
    assert listed(client, "?q=נציג") == ["CAin2"]
    assert listed(client, "?q=" + requests.utils.quote("100%")) == ["CA100%"]
    assert listed(client, "?q=" + requests.utils.quote("%")) == ["CA100%"], "a % is a character, not a wildcard"
    assert listed(client, "?q=_") == ["CA100%"]
    assert listed(client, "?q=תור&direction=outbound") == []


def test_bad_filters_are_named_and_list_nothing(client, console_server):
    store_calls(console_server)
    answer = client.get("/console/calls?direction=sideways&date_from=yesterday&status=")
    assert answer.status_code == 400
    fields = texts_of(answer.text, r'class="field-error" data-field="(\w+)"')
    assert sorted(fields) == ["date_from", "direction"]
    assert listed_call_sids(answer.text) == []
    for far in ("0001-01-01", "9999-12-31"):  # time zone arithmetic would overflow there
        answer = client.get(f"/console/calls?date_from={far}&date_to={far}")
        assert answer.status_code == 400
        assert sorted(texts_of(answer.text, r'class="field-error" data-field="(\w+)"')) == ["date_from", "date_to"]


def test_history_pages(client, console_server):
    with console_server.db.session() as session:
        business = Business(name="עסק עמוס")
        session.add(business)
        session.flush()
        first = israel_time("2025-05-01 08:00")
        session.add_all([Call(call_sid=f"CA{n:03d}", business_id=business.id, status="completed",
                              started_at=first + timedelta(minutes=n)) for n in range(PAGE_SIZE + 3)])
    page_one = client.get("/console/calls").text
    assert listed_call_sids(page_one) == [f"CA{n:03d}" for n in range(PAGE_SIZE + 2, 2, -1)]
    [older] = texts_of(page_one, r'href="([^"]+)" rel="next"')
    page_two = client.get(older).text
    assert listed_call_sids(page_two) == ["CA002", "CA001", "CA000"]
    assert 'rel="next"' not in page_two and 'rel="prev"' in page_two


def test_the_call_page_shows_the_timeline_summary_extraction_and_deliveries(client, console_server):
    with console_server.db.session() as session:
        business = Business(name="מספרה")
        session.add(business)
        session.flush()
        started = israel_time("2025-03-04 10:00")
        call = Call(call_sid="CApage", business_id=business.id, status="completed", end_reason="caller_goodbye",
                    started_at=started, ended_at=started + timedelta(seconds=40), duration_s=40.0, cost_usd=0.0123,
                    metrics={"greeting_latency_ms": 812.4, "response_latency_ms": [640.0, 910.5]},
                    summary="הלקוח קבע תור ליום שלישי.", extraction={"name": "דנה", "intent": "appointment"})
        call.turns = [
            Turn(speaker="agent", text="שלום, הגעתם למספרה", started_at=started, latency_ms=812.4),
            Turn(speaker="caller", text="רציתי לקבוע תור", started_at=started + timedelta(seconds=4)),
            Turn(speaker="agent", text="בשמחה, לאיזה יום", started_at=started + timedelta(seconds=6),
                 interrupted=True, latency_ms=640.0),
        ]
        session.add(call)
        session.flush()
        job = Job(kind="webhook", call_id=call.id, status="done")
        session.add(job)
        session.flush()
        session.add(WebhookDelivery(job_id=job.id, call_id=call.id, event_id="evt_1", attempt=1,
                                    url="https://hooks.example/x", status_code=500, ok=False, duration_ms=120.0))
    page = client.get("/console/calls/CApage")
    assert page.status_code == 200
    rows = texts_of(page.text, r'<tr class="turn-\w+">(.*?)</tr>')
    assert len(rows) == 3
    cells = [texts_of(row, r"<td[^>]*>(.*?)</td>") for row in rows]
    assert cells[0] == ["סוכן", "10:00:00", "שלום, הגעתם למספרה", "", "812"]
    assert cells[1] == ["מתקשר", "10:00:04", "רציתי לקבוע תור", "", ""]
    assert cells[2] == ["סוכן", "10:00:06", "בשמחה, לאיזה יום", "כן", "640"]
    assert texts_of(page.text, r'id="summary"[^>]*>(.*?)</p>') == ["הלקוח קבע תור ליום שלישי."]
    assert "דנה" in page.text and "caller_goodbye" in page.text and "$0.0123" in page.text
    assert "640.0, 910.5" in page.text
    [delivery] = texts_of(page.text, r'<table id="deliveries">.*?<tbody>(.*?)</tbody>')
    assert "500" in delivery and "failed" in delivery


def test_reprocess_queues_the_post_call_job_again(client, console_server):
    with console_server.db.session() as session:
        call = Call(call_sid="CAdone", status="completed", ended_at=israel_time("2025-03-04 10:01"),
                    started_at=israel_time("2025-03-04 10:00"))
        live = Call(call_sid="CAlive", status="in-progress", started_at=israel_time("2025-03-04 10:00"))
        session.add_all([call, live])
        session.flush()
        session.add(Job(kind="post_call", call_id=call.id, status="failed", attempts=6, last_error="boom"))
    token = client.csrf_token("/console/calls/CAdone")
    answer = client.post("/console/calls/CAdone/reprocess", {"csrf_token": token}, csrf_from=None)
    assert answer.status_code == 302
    with console_server.db.session() as session:
        [job] = session.query(Job).join(Call).filter(Call.call_sid == "CAdone").all()
        assert (job.status, job.attempts, job.last_error) == ("queued", 0, None)
    assert "השיחה נכנסה לתור לעיבוד מחדש" in client.get("/console/calls/CAdone").text
    client.post("/console/calls/CAlive/reprocess", {"csrf_token": token}, csrf_from=None)
    with console_server.db.session() as session:
        assert session.query(Job).join(Call).filter(Call.call_sid == "CAlive").count() == 0
    assert "השיחה עוד לא הסתיימה" in client.get("/console/calls/CAlive").text


def test_the_recording_is_streamed_through_the_server_with_the_account_credentials(make_live_server, settings):
    media = b"ID3" + bytes(range(256)) * 400
    seen: list[dict] = []
    twilio = FakeTwilioRest()

    def mp3(account_sid: str, recording_sid: str):
        seen.append({"auth": request.authorization and (request.authorization.username,
                                                       request.authorization.password),
                     "range": request.headers.get("Range")})
        return Response(media, mimetype="audio/mpeg")

    twilio.app.add_url_rule("/2010-04-01/Accounts/<account_sid>/Recordings/<recording_sid>.mp3", "mp3", mp3)
    twilio.start()
    try:
        live = make_live_server(dataclasses.replace(
            settings, admin_api_token=ADMIN_TOKEN, twilio_account_sid="ACtest", twilio_auth_token="secret-auth",
            twilio_api_base_url=twilio.base_url))
        recording_url = f"{twilio.base_url}/2010-04-01/Accounts/ACtest/Recordings/RE1"
        with live.db.session() as session:
            session.add_all([
                Call(call_sid="CArec", status="completed", recording_status="completed", recording_url=recording_url),
                Call(call_sid="CAelsewhere", status="completed", recording_status="completed",
                     recording_url="https://attacker.example/2010-04-01/Accounts/ACtest/Recordings/RE2"),
            ])
        client = ConsoleClient(live.base_url)
        client.sign_in()
        page = client.get("/console/calls/CArec").text
        assert twilio.base_url not in page, "the page never shows Twilio's URL"
        answer = client.get("/console/calls/CArec/recording")
        assert answer.status_code == 200 and answer.headers["Content-Type"] == "audio/mpeg"
        assert answer.content == media
        assert seen == [{"auth": ("ACtest", "secret-auth"), "range": None}]
        assert client.get("/console/calls/CAelsewhere/recording").status_code == 404
        assert len(seen) == 1, "the credentials went nowhere but Twilio"
        assert ConsoleClient(live.base_url).get("/console/calls/CArec/recording").status_code == 302
    finally:
        twilio.stop()
