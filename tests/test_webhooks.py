"""Twilio's webhooks over loopback: TwiML, signatures, the call row."""
import dataclasses
import xml.etree.ElementTree as ET

import requests
from twilio.request_validator import RequestValidator

from services.store.models import Call
from server.security import StreamToken
from server.stream_parameters import StreamParameters
from tests.conftest import BUSINESS_NUMBER, CALLER_NUMBER, add_business

FORM = {"CallSid": "CA100", "AccountSid": "AC1", "From": CALLER_NUMBER, "To": BUSINESS_NUMBER,
        "Direction": "inbound", "CallStatus": "ringing"}


def post(live, path, form, **kw):
    return requests.post(f"{live.base_url}{path}", data=form, timeout=5, **kw)


def call_row(live, call_sid):
    with live.db.session() as session:
        return session.query(Call).filter_by(call_sid=call_sid).one_or_none()


def test_inbound_call_connects_a_media_stream_with_a_signed_token(live_server, business_id):
    response = post(live_server, "/webhook/incoming_call", FORM)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/xml")
    root = ET.fromstring(response.text)
    connect = root.find("Connect")
    assert connect.get("action") == f"{live_server.base_url}/webhook/stream_ended"
    stream = connect.find("Stream")
    assert stream.get("url") == f"wss://{live_server.host}:{live_server.port}/ws/twilio-media"
    assert stream.get("statusCallback") == f"{live_server.base_url}/webhook/stream_status"
    params = {p.get("name"): p.get("value") for p in stream.findall("Parameter")}
    assert params["call_sid"] == "CA100" and params["business_id"] == str(business_id)
    assert params["direction"] == "inbound" and params["from"] == CALLER_NUMBER and params["to"] == BUSINESS_NUMBER
    vouched = StreamParameters.from_start("CA100", params)
    assert StreamToken("test-secret").verify(vouched.signed_text(), params["token"]) is None
    for other in (dataclasses.replace(vouched, call_sid="CA999"), dataclasses.replace(vouched, business_id=business_id + 1),
                  dataclasses.replace(vouched, direction="outbound"), dataclasses.replace(vouched, from_number="+972500000000")):
        assert StreamToken("test-secret").verify(other.signed_text(), params["token"]) == "bad signature"
    row = call_row(live_server, "CA100")
    assert row.business_id == business_id and row.status == "ringing" and row.direction == "inbound"


def test_legacy_aliases_answer_the_same(live_server, business_id):
    for i, path in enumerate(["/webhook/voice", "/webhook/incoming-call", "/incoming_call"]):
        response = post(live_server, path, {**FORM, "CallSid": f"CA20{i}"})
        assert response.status_code == 200
        assert ET.fromstring(response.text).find("Connect/Stream") is not None


def test_a_retried_webhook_does_not_duplicate_the_call(live_server, business_id):
    post(live_server, "/webhook/incoming_call", FORM)
    post(live_server, "/webhook/incoming_call", FORM)
    with live_server.db.session() as session:
        assert session.query(Call).filter_by(call_sid="CA100").count() == 1


def test_unknown_number_gets_a_spoken_apology_and_hangup(live_server, business_id):
    response = post(live_server, "/webhook/incoming_call", {**FORM, "CallSid": "CA300", "To": "+972399999999"})
    assert response.status_code == 200
    root = ET.fromstring(response.text)
    say = root.find("Say")
    assert say is not None and say.get("language") == "he-IL" and say.text
    assert root.find("Hangup") is not None
    assert call_row(live_server, "CA300").end_reason == "unknown_number"


def test_with_an_auth_token_signatures_are_required(make_live_server, settings):
    live = make_live_server(dataclasses.replace(settings, twilio_auth_token="tok",
                                                public_base_url="https://agent.example.com"))
    add_business(live)
    assert post(live, "/webhook/incoming_call", FORM).status_code == 403
    bad = post(live, "/webhook/incoming_call", FORM, headers={"X-Twilio-Signature": "bm9wZQ=="})
    assert bad.status_code == 403
    # Twilio signs the public URL, not the loopback one we are reached on.
    signature = RequestValidator("tok").compute_signature("https://agent.example.com/webhook/incoming_call", FORM)
    good = post(live, "/webhook/incoming_call", FORM, headers={"X-Twilio-Signature": signature})
    assert good.status_code == 200
    stream = ET.fromstring(good.text).find("Connect/Stream")
    assert stream.get("url") == "wss://agent.example.com/ws/twilio-media"


def test_status_callbacks_keep_the_row_true(live_server, business_id):
    post(live_server, "/webhook/incoming_call", FORM)
    assert post(live_server, "/webhook/call_status", {"CallSid": "CA100", "CallStatus": "in-progress"}).status_code == 200
    assert call_row(live_server, "CA100").answered_at is not None
    post(live_server, "/webhook/call_status", {"CallSid": "CA100", "CallStatus": "completed", "CallDuration": "42"})
    row = call_row(live_server, "CA100")
    assert row.status == "completed" and row.duration_s == 42 and row.ended_at is not None
    assert post(live_server, "/webhook/call_status", {"CallSid": "CA100", "CallStatus": "bogus"}).status_code == 400


def test_stream_ended_hangs_up_or_apologises_by_end_reason(live_server, business_id):
    post(live_server, "/webhook/incoming_call", FORM)
    plain = ET.fromstring(post(live_server, "/webhook/stream_ended", {"CallSid": "CA100"}).text)
    assert plain.find("Hangup") is not None and plain.find("Say") is None
    with live_server.db.session() as session:
        session.query(Call).filter_by(call_sid="CA100").one().end_reason = "realtime_unavailable"
    sorry = ET.fromstring(post(live_server, "/webhook/stream_ended", {"CallSid": "CA100"}).text)
    assert sorry.find("Say").get("language") == "he-IL" and sorry.find("Hangup") is not None
