"""Calling leads back: the call placed through Twilio's REST API (a local fake), answered by a
person or by an answering machine, and status callbacks that keep the row true."""
import dataclasses
import xml.etree.ElementTree as ET

import pytest
import requests
from twilio.request_validator import RequestValidator

from services.store.models import Business, Call, Lead
from tests.conftest import BUSINESS_NUMBER
from tests.fakes.realtime_server import RealtimeScript, Reply
from tests.fakes.twilio_caller import FakeTwilioCall, parse_twiml
from tests.harness import TEST_TIMING

SID = "AC" + "1" * 32
TOKEN = "twilio-test-token"
LEAD = "+972541234567"
VOICEMAIL = "שלום, כאן מספרת הבדיקה. חזרנו אליכם בעניין התור, נשמח שתחזרו אלינו. תודה!"
OUT_GREETING = "שלום, כאן מספרת הבדיקה, מדברים לגבי הפנייה שלכם."


@pytest.fixture
def outbound(make_harness, twilio_rest):
    # The first words wait briefly for machine detection here: these tests post its result after
    # the greeting (tests/test_voicemail.py has the wait itself).
    return make_harness(RealtimeScript(responses=[Reply(OUT_GREETING, 1200)]),
                        timing=dataclasses.replace(TEST_TIMING, amd_wait_s=0.3),
                        business={"outbound_greeting": OUT_GREETING, "voicemail_message": VOICEMAIL},
                        twilio_account_sid=SID, twilio_auth_token=TOKEN, twilio_api_base_url=twilio_rest.base_url)


def twilio_post(h, path, form):
    """A webhook as Twilio sends it: signed with the account's auth token."""
    url = f"{h.live.base_url}{path}"
    signature = RequestValidator(TOKEN).compute_signature(url, form)
    return requests.post(url, data=form, headers={"X-Twilio-Signature": signature}, timeout=5)


def place(h, **body):
    return requests.post(f"{h.live.base_url}/api/calls/outbound", json={"business_id": h.business_id, "to": LEAD,
                                                                         **body}, timeout=5)


def row(h, call_sid) -> Call:
    with h.live.db.session() as session:
        call = session.query(Call).filter_by(call_sid=call_sid).one()
        session.expunge(call)
        return call


def answer(h, call_sid) -> FakeTwilioCall:
    """Twilio reaches the lead: it asks for the TwiML, then opens the media stream."""
    response = twilio_post(h, "/webhook/outbound_call", {"CallSid": call_sid, "AccountSid": SID,
                                                         "From": BUSINESS_NUMBER, "To": LEAD,
                                                         "Direction": "outbound-api", "CallStatus": "in-progress"})
    placed = parse_twiml(response.status_code, response.text)
    assert placed.stream_url and placed.parameters["direction"] == "outbound", response.text
    signature = RequestValidator(TOKEN).compute_signature(f"wss://{h.live.host}:{h.live.port}/ws/twilio-media", {})
    caller = FakeTwilioCall(h.live.media_url, call_sid, placed.parameters, account_sid=SID,
                            headers={"X-Twilio-Signature": signature}).start()
    h.callers.append(caller)
    return caller


def test_an_outbound_call_is_placed_through_twilio_with_machine_detection(outbound, twilio_rest):
    with outbound.live.db.session() as session:
        lead = Lead(business_id=outbound.business_id, phone=LEAD, name="רונית")
        session.add(lead)
        session.flush()
        lead_id = lead.id
    answered = place(outbound, lead_id=lead_id)
    assert answered.status_code == 201, answered.text
    call_sid = answered.json()["call_sid"]

    created = twilio_rest.of("create")
    assert len(created) == 1 and created[0].auth_user == SID and created[0].account_sid == SID
    sent = created[0]
    base = outbound.live.base_url
    assert (sent.value("To"), sent.value("From")) == (LEAD, BUSINESS_NUMBER)
    assert sent.value("Url") == f"{base}/webhook/outbound_call"
    assert sent.value("StatusCallback") == f"{base}/webhook/call_status"
    assert set(sent.form["StatusCallbackEvent"]) == {"initiated", "ringing", "answered", "completed"}
    assert sent.value("MachineDetection") == "DetectMessageEnd" and sent.value("AsyncAmd") == "true"
    assert sent.value("AsyncAmdStatusCallback") == f"{base}/webhook/amd_status"
    stored = row(outbound, call_sid)
    assert stored.direction == "outbound" and stored.lead_id == lead_id and stored.to_number == LEAD

    # The lead picks up: the agent speaks first, with the outbound greeting and rules.
    caller = answer(outbound, call_sid)
    caller.wait_heard(1200, timeout=5)
    conn = outbound.fake.connections[0]
    assert OUT_GREETING in conn.client_events("response.create")[0]["response"]["instructions"]
    assert "You placed this call" in conn.client_events("session.update")[0]["session"]["instructions"]
    human = twilio_post(outbound, "/webhook/amd_status",
                        {"CallSid": call_sid, "AccountSid": SID, "AnsweredBy": "human"})
    assert human.status_code == 200 and twilio_rest.of("update") == []
    assert not caller.closed
    assert row(outbound, call_sid).answered_by == "human"


def test_an_answering_machine_gets_the_voicemail_message_and_the_call_ends(outbound, twilio_rest):
    call_sid = place(outbound).json()["call_sid"]
    caller = answer(outbound, call_sid)
    caller.wait_heard(400, timeout=5)
    machine = twilio_post(outbound, "/webhook/amd_status", {"CallSid": call_sid, "AccountSid": SID,
                                                            "AnsweredBy": "machine_end_beep"})
    assert machine.status_code == 200
    update = twilio_rest.wait_for(lambda: twilio_rest.of("update"), message="the live call's TwiML to be replaced")[0]
    assert update.call_sid == call_sid
    twiml = ET.fromstring(update.value("Twiml"))
    assert twiml.find("Say").text == VOICEMAIL and twiml.find("Say").get("language") == "he-IL"
    assert twiml.find("Hangup") is not None
    caller.stop()  # Twilio ends the stream when the call's TwiML is replaced
    stored = outbound.wait_ended(call_sid)
    assert stored.row.end_reason == "voicemail_left" and stored.row.answered_by == "machine_end_beep"


def test_a_machine_without_a_voicemail_message_gets_one_in_the_business_name(outbound, twilio_rest):
    with outbound.live.db.session() as session:
        business = session.get(Business, outbound.business_id)
        business.voicemail_message = ""
        name = business.name
    call_sid = place(outbound).json()["call_sid"]
    answer(outbound, call_sid).wait_heard(400, timeout=5)
    twilio_post(outbound, "/webhook/amd_status", {"CallSid": call_sid, "AccountSid": SID,
                                                  "AnsweredBy": "machine_end_silence"})
    twiml = ET.fromstring(twilio_rest.wait_for(lambda: twilio_rest.of("update"))[0].value("Twiml"))
    assert name in twiml.find("Say").text and twiml.find("Hangup") is not None
    assert row(outbound, call_sid).end_reason == "voicemail_left"


def test_a_fax_is_hung_up_on_without_a_message(outbound, twilio_rest):
    call_sid = place(outbound).json()["call_sid"]
    answer(outbound, call_sid).wait_heard(400, timeout=5)
    twilio_post(outbound, "/webhook/amd_status", {"CallSid": call_sid, "AccountSid": SID, "AnsweredBy": "fax"})
    twiml = ET.fromstring(twilio_rest.wait_for(lambda: twilio_rest.of("update"))[0].value("Twiml"))
    assert twiml.find("Say") is None and twiml.find("Hangup") is not None
    assert row(outbound, call_sid).end_reason == "voicemail"


def test_status_callbacks_keep_an_unanswered_call_true(outbound, twilio_rest):
    call_sid = place(outbound).json()["call_sid"]
    for status in ("initiated", "ringing", "no-answer"):
        assert twilio_post(outbound, "/webhook/call_status", {"CallSid": call_sid, "AccountSid": SID,
                                                               "CallStatus": status}).status_code == 200
    stored = row(outbound, call_sid)
    assert stored.status == "no-answer" and stored.end_reason == "no-answer" and stored.ended_at is not None
    assert stored.stream_sid is None and stored.answered_at is None


def test_a_status_callback_for_a_call_without_a_row_creates_it(outbound):
    form = {"CallSid": "CAnever", "AccountSid": SID, "From": BUSINESS_NUMBER, "To": LEAD, "Direction": "outbound-api",
            "CallStatus": "busy"}
    assert twilio_post(outbound, "/webhook/call_status", form).status_code == 200
    stored = row(outbound, "CAnever")
    assert (stored.status, stored.end_reason, stored.business_id) == ("busy", "busy", outbound.business_id)


def test_bad_requests_get_json_errors_and_place_no_call(outbound, twilio_rest):
    assert place(outbound, to="0541234567").status_code == 422
    assert place(outbound, unknown=1).json()["fields"] == {"unknown": "unknown field"}
    missing = requests.post(f"{outbound.live.base_url}/api/calls/outbound", json={"business_id": 999, "to": LEAD},
                            timeout=5)
    assert missing.status_code == 404 and "error" in missing.json()
    assert place(outbound, lead_id=12345).status_code == 404
    with outbound.live.db.session() as session:
        elsewhere = Business(name="עסק אחר")
        session.add(elsewhere)
        session.flush()
        foreign = Lead(business_id=elsewhere.id, phone=LEAD)
        session.add(foreign)
        session.flush()
        foreign_id = foreign.id
    assert place(outbound, lead_id=foreign_id).status_code == 422
    twilio_rest.fail_next(400, 21211, "The 'To' number is not a valid phone number.")
    refused = place(outbound)
    assert refused.status_code == 422 and "not a valid phone number" in refused.json()["error"]
    assert [r.value("To") for r in twilio_rest.of("create")] == [LEAD]  # only the refused attempt reached Twilio
    with outbound.live.db.session() as session:
        assert session.query(Call).count() == 0


def test_without_twilio_credentials_outbound_calls_are_a_409(make_harness):
    h = make_harness()
    answered = requests.post(f"{h.live.base_url}/api/calls/outbound", json={"business_id": h.business_id, "to": LEAD},
                             timeout=5)
    assert answered.status_code == 409 and "TWILIO_ACCOUNT_SID" in answered.json()["error"]


def test_the_voicemail_message_is_a_business_setting(outbound):
    base = outbound.live.base_url
    url = f"{base}/api/businesses/{outbound.business_id}"
    assert requests.get(url, timeout=5).json()["voicemail_message"] == VOICEMAIL
    changed = requests.patch(url, json={"voicemail_message": "השאירו הודעה"}, timeout=5)
    assert changed.status_code == 200 and changed.json()["voicemail_message"] == "השאירו הודעה"
    assert requests.patch(url, json={"voicemail_message": 5}, timeout=5).status_code == 422

