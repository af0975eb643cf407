"""Warm transfers, as Twilio runs them: the agent's transfer dials the business's person with a
whisper on their leg (a summary, then press 1), and a transfer nobody accepts brings the caller
back to the agent on a new stream, the conversation restored and a call-back on the lead.
Every webhook is signed, as Twilio signs it."""
import dataclasses
import xml.etree.ElementTree as ET

import pytest
import requests
from twilio.request_validator import RequestValidator

from services.store.models import Call, Lead
from tests.conftest import BUSINESS_NUMBER, CALLER_NUMBER
from tests.fakes.realtime_server import RealtimeScript, Reply, ToolCall
from tests.fakes.twilio_caller import FakeTwilioCall, parse_twiml
from tests.fakes.waiting import wait_for
from tests.harness import TEST_TIMING

SID = "AC" + "2" * 32
TOKEN = "twilio-test-token"
HUMAN = "+972521112233"
LEG = "CA" + "9" * 32  # the person's leg of the <Dial>
GREETING = Reply("שלום, הגעתם למספרת הבדיקה, איך אפשר לעזור?", 500)
TRANSFERRING = Reply("אני מעבירה אותך לנציג, רק רגע.", 600)
BACK = Reply("מצטערת, אף אחד לא היה פנוי. נציג יחזור אליך בהקדם.", 800)
ASKED = "אני רוצה לדבר עם בן אדם על התור שלי"
TIMING = dataclasses.replace(TEST_TIMING, goodbye_timeout_s=5.0)


@pytest.fixture
def warm(make_harness):
    script = RealtimeScript(responses=[GREETING, ToolCall("transfer_call", {"reason": "wants a person"}),
                                       TRANSFERRING], caller_transcripts=[ASKED])
    return make_harness(script, timing=TIMING, business={"transfer_number": HUMAN},
                        twilio_account_sid=SID, twilio_auth_token=TOKEN)


def signed_post(h, url, form):
    signature = RequestValidator(TOKEN).compute_signature(url, form)
    return requests.post(url, data=form, headers={"X-Twilio-Signature": signature}, timeout=5)


def connect_stream(h, call_sid, parameters) -> FakeTwilioCall:
    signature = RequestValidator(TOKEN).compute_signature(f"wss://{h.live.host}:{h.live.port}/ws/twilio-media", {})
    caller = FakeTwilioCall(h.live.media_url, call_sid, parameters, account_sid=SID,
                            headers={"X-Twilio-Signature": signature}).start()
    h.callers.append(caller)
    return caller


def row(h, call_sid) -> Call:
    with h.live.db.session() as session:
        call = session.query(Call).filter_by(call_sid=call_sid).one()
        session.expunge(call)
        return call


def transferred_call(h, call_sid):
    """An inbound call that asks for a person: greeting, the caller's words, the agent's transfer."""
    placed = parse_twiml(*_status_and_text(signed_post(h, f"{h.live.base_url}/webhook/incoming_call", {
        "CallSid": call_sid, "AccountSid": SID, "From": CALLER_NUMBER, "To": BUSINESS_NUMBER,
        "Direction": "inbound", "CallStatus": "ringing"})))
    assert placed.stream_url, placed.twiml
    caller = connect_stream(h, call_sid, placed.parameters)
    caller.wait_heard(GREETING.audio_ms, timeout=15)
    caller.wait_quiet(150)
    caller.speak(400)
    caller.wait_closed(timeout=15)
    wait_for(lambda: row(h, call_sid).end_reason == "transfer", 10, message="the transfer to be stored")
    return placed


def _status_and_text(response):
    return response.status_code, response.text


def dial_of(h, call_sid) -> ET.Element:
    after = signed_post(h, f"{h.live.base_url}/webhook/stream_ended", {"CallSid": call_sid, "AccountSid": SID})
    assert after.status_code == 200, after.text
    dial = ET.fromstring(after.text).find("Dial")
    assert dial is not None, after.text
    return dial


def whisper_of(h, dial, call_sid) -> ET.Element:
    url = dial.find("Number").get("url")
    answered = signed_post(h, url, {"CallSid": LEG, "ParentCallSid": call_sid, "AccountSid": SID,
                                    "CallStatus": "in-progress", "Direction": "outbound-dial"})
    assert answered.status_code == 200, answered.text
    return ET.fromstring(answered.text)


def test_the_person_hears_a_hebrew_summary_and_is_asked_to_press_1(warm):
    call_sid = "CA" + "1" * 32
    transferred_call(warm, call_sid)
    dial = dial_of(warm, call_sid)
    number = dial.find("Number")
    assert number.text == HUMAN
    assert dial.get("action") == f"{warm.live.base_url}/webhook/warm_transfer/dial_ended"
    assert dial.get("timeout") == str(TIMING.transfer_ring_s) and dial.get("callerId") == CALLER_NUMBER
    assert number.get("url").startswith(f"{warm.live.base_url}/webhook/warm_transfer/whisper?call={call_sid}")

    whisper = whisper_of(warm, dial, call_sid)
    gather = whisper.find("Gather")
    assert gather.get("numDigits") == "1"
    assert gather.get("action").startswith(f"{warm.live.base_url}/webhook/warm_transfer/answer")
    say = gather.find("Say")
    assert say.get("language") == "he-IL"
    assert ASKED in say.text and "הקש 1" in say.text  # the caller's words, then the key to press
    assert [child.tag for child in whisper] == ["Gather", "Hangup"]  # no key: the leg hangs up

    # Only Twilio may ask: unsigned, or signed for another address, is refused.
    assert requests.post(number.get("url"), data={"CallSid": LEG}, timeout=5).status_code == 403
    forged = RequestValidator(TOKEN).compute_signature(f"{warm.live.base_url}/webhook/warm_transfer/whisper",
                                                       {"CallSid": LEG})
    assert requests.post(number.get("url"), data={"CallSid": LEG}, headers={"X-Twilio-Signature": forged},
                         timeout=5).status_code == 403
    assert requests.post(dial.get("action"), data={"CallSid": call_sid, "DialCallStatus": "no-answer"},
                         timeout=5).status_code == 403


def test_the_whisper_names_a_known_caller(warm):
    with warm.live.db.session() as session:
        session.add(Lead(business_id=warm.business_id, phone=CALLER_NUMBER, name="דנה כהן"))
    call_sid = "CA" + "3" * 32
    transferred_call(warm, call_sid)
    say = whisper_of(warm, dial_of(warm, call_sid), call_sid).find("Gather").find("Say")
    assert "דנה כהן" in say.text


def test_pressing_1_bridges_the_call_and_it_is_stored_as_transferred(warm):
    call_sid = "CA" + "4" * 32
    transferred_call(warm, call_sid)
    dial = dial_of(warm, call_sid)
    action = whisper_of(warm, dial, call_sid).find("Gather").get("action")
    accepted = signed_post(warm, action, {"CallSid": LEG, "AccountSid": SID, "Digits": "1"})
    root = ET.fromstring(accepted.text)
    assert accepted.status_code == 200 and len(root) == 0  # the whisper ends: Twilio bridges the legs
    over = signed_post(warm, dial.get("action"), {"CallSid": call_sid, "AccountSid": SID,
                                                  "DialCallStatus": "completed", "CallStatus": "in-progress"})
    root = ET.fromstring(over.text)
    assert root.find("Hangup") is not None and root.find("Connect") is None
    shown = requests.get(f"{warm.live.base_url}/api/calls/{call_sid}", timeout=5).json()
    assert (shown["end_reason"], shown["transfer_to"], shown["transfer_status"]) == ("transfer", HUMAN, "completed")
    assert shown["ended_at"] is not None
    assert len(warm.fake.connections) == 1


@pytest.mark.parametrize("outcome, key", [("no-answer", None), ("busy", None), ("completed", "2")])
def test_nobody_accepting_brings_the_caller_back_to_the_agent_who_knows_the_conversation(warm, outcome, key):
    call_sid = "CA" + "5" * 32
    first = transferred_call(warm, call_sid)
    dial = dial_of(warm, call_sid)
    if key is not None:  # the person answered and pressed another key: their leg hangs up
        action = whisper_of(warm, dial, call_sid).find("Gather").get("action")
        declined = signed_post(warm, action, {"CallSid": LEG, "AccountSid": SID, "Digits": key})
        assert ET.fromstring(declined.text).find("Hangup") is not None
    over = signed_post(warm, dial.get("action"), {"CallSid": call_sid, "AccountSid": SID,
                                                  "DialCallStatus": outcome, "CallStatus": "in-progress"})
    back = parse_twiml(over.status_code, over.text)
    assert back.stream_url and back.action_url.endswith("/webhook/stream_ended"), over.text
    assert back.parameters["token"] != first.parameters["token"] and back.parameters["resumed"] == "1"
    stored = row(warm, call_sid)
    assert stored.transfer_status == ("declined" if key else outcome)
    assert stored.end_reason is None and stored.ended_at is None  # the call goes on
    with warm.live.db.session() as session:
        lead = session.query(Lead).filter_by(business_id=warm.business_id, phone=CALLER_NUMBER).one()
        assert lead.callback_requested_at is not None and lead.callback_call_sid == call_sid
        assert stored.lead_id == lead.id

    # The first stream's token, still unexpired, opens nothing now.
    replay = connect_stream(warm, call_sid, first.parameters)
    assert replay.wait_closed(timeout=10) == 1008

    warm.fake.script.responses = [BACK]  # the new session's (the fake's responses are per connection)
    caller = connect_stream(warm, call_sid, back.parameters)
    # The second connection to carry anything (the refused replay's, opened at its upgrade, carried nothing).
    conn = wait_for(lambda: len(warm.fake.carried()) == 2 and warm.fake.carried()[1], 15,
                    message="the new session")
    conn.wait_for_client_event("response.create", timeout=15)
    texts = [(item["role"], item["content"][0]["text"]) for item in conn.items_created
             if item.get("type") == "message"]
    assert ("user", ASKED) in texts
    assert ("assistant", GREETING.text) in texts and ("assistant", TRANSFERRING.text) in texts
    assert any(role == "system" and "no one at the business could take the call" in text for role, text in texts)
    caller.wait_heard(BACK.audio_ms, timeout=15)  # the agent speaks first, about the call back
    assert "instructions" not in conn.client_events("response.create")[0].get("response", {})  # not the greeting
    wait_for(lambda: ("agent", BACK.text, False) in warm.stored(call_sid).turns, 10, message="the answer stored")
    caller.stop()
    stored = warm.wait_ended(call_sid, timeout=15)
    assert stored.row.end_reason == "caller_hangup" and stored.row.transfer_status == ("declined" if key else outcome)


def test_a_caller_who_hung_up_while_it_rang_is_not_called_back_into_a_stream(warm):
    call_sid = "CA" + "6" * 32
    transferred_call(warm, call_sid)
    dial = dial_of(warm, call_sid)
    over = signed_post(warm, dial.get("action"), {"CallSid": call_sid, "AccountSid": SID,
                                                  "DialCallStatus": "canceled", "CallStatus": "completed"})
    root = ET.fromstring(over.text)
    assert root.find("Connect") is None and root.find("Hangup") is not None
    assert row(warm, call_sid).end_reason == "transfer"


def test_a_business_may_keep_cold_transfers(warm):
    url = f"{warm.live.base_url}/api/businesses/{warm.business_id}"
    assert requests.get(url, timeout=5).json()["transfer_mode"] == "warm"  # the default
    assert requests.patch(url, json={"transfer_mode": "lukewarm"}, timeout=5).status_code in (400, 422)
    changed = requests.patch(url, json={"transfer_mode": "cold"}, timeout=5)
    assert changed.status_code == 200 and changed.json()["transfer_mode"] == "cold"
    call_sid = "CA" + "7" * 32
    transferred_call(warm, call_sid)
    dial = dial_of(warm, call_sid)
    assert dial.find("Number").text == HUMAN and dial.find("Number").get("url") is None
    assert dial.get("action").endswith("/webhook/transfer_ended")
