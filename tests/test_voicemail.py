"""Outbound calls wait, a bounded time, for Twilio's answering machine detection before the
agent speaks: a person is greeted, a machine is left the business's voicemail message after the
beep and the call ends, and no result in time is a greeting at the bound."""
import dataclasses
import time
import xml.etree.ElementTree as ET

import pytest
import requests
from twilio.request_validator import RequestValidator

from services.store.models import Call
from tests.conftest import BUSINESS_NUMBER
from tests.fakes.realtime_server import RealtimeScript, Reply
from tests.fakes.twilio_caller import FakeTwilioCall, parse_twiml
from tests.harness import TEST_TIMING

SID = "AC" + "3" * 32
TOKEN = "twilio-test-token"
LEAD = "+972541234567"
OUT_GREETING = "שלום, כאן מספרת הבדיקה, מדברים לגבי הפנייה שלכם."
VOICEMAIL = "שלום, כאן מספרת הבדיקה. חזרנו אליכם, נשמח שתחזרו אלינו. תודה!"
# Far beyond any test's waits: a result the test posts always comes within it.
LONG_WAIT = dataclasses.replace(TEST_TIMING, amd_wait_s=60.0)
SHORT_WAIT_S = 1.5


@pytest.fixture
def make_outbound(make_harness, twilio_rest):
    def make(timing=LONG_WAIT, voicemail_message=VOICEMAIL):
        return make_harness(RealtimeScript(responses=[Reply(OUT_GREETING, 800)]), timing=timing,
                            business={"outbound_greeting": OUT_GREETING, "voicemail_message": voicemail_message},
                            twilio_account_sid=SID, twilio_auth_token=TOKEN,
                            twilio_api_base_url=twilio_rest.base_url)
    return make


def signed_post(h, path, form):
    url = f"{h.live.base_url}{path}"
    signature = RequestValidator(TOKEN).compute_signature(url, form)
    return requests.post(url, data=form, headers={"X-Twilio-Signature": signature}, timeout=5)


def row(h, call_sid) -> Call:
    with h.live.db.session() as session:
        call = session.query(Call).filter_by(call_sid=call_sid).one()
        session.expunge(call)
        return call


def place_and_answer(h) -> FakeTwilioCall:
    """The API places the call; Twilio reaches the lead, asks for the TwiML and opens the stream.
    Returns once the call's Realtime session is configured (the first words are up to the wait)."""
    placed = requests.post(f"{h.live.base_url}/api/calls/outbound", json={"business_id": h.business_id, "to": LEAD},
                           timeout=5)
    assert placed.status_code == 201, placed.text
    call_sid = placed.json()["call_sid"]
    answer = signed_post(h, "/webhook/outbound_call", {"CallSid": call_sid, "AccountSid": SID, "From": BUSINESS_NUMBER,
                                                       "To": LEAD, "Direction": "outbound-api",
                                                       "CallStatus": "in-progress"})
    twiml = parse_twiml(answer.status_code, answer.text)
    assert twiml.stream_url, answer.text
    signature = RequestValidator(TOKEN).compute_signature(f"wss://{h.live.host}:{h.live.port}/ws/twilio-media", {})
    caller = FakeTwilioCall(h.live.media_url, call_sid, twiml.parameters, account_sid=SID,
                            headers={"X-Twilio-Signature": signature}).start()
    h.callers.append(caller)
    return caller


def session_configured(h):
    conn = h.fake.wait_for_connection(1, timeout=15)
    conn.wait_for_client_event("session.update", timeout=15)
    return conn


@pytest.mark.parametrize("answered_by", ["machine_end_beep", "machine_end_other", "machine_end_silence"])
def test_a_machine_is_left_the_voicemail_message_and_the_agent_never_speaks(make_outbound, twilio_rest, answered_by):
    h = make_outbound()
    caller = place_and_answer(h)
    conn = session_configured(h)
    detected = signed_post(h, "/webhook/amd_status", {"CallSid": caller.call_sid, "AccountSid": SID,
                                                      "AnsweredBy": answered_by})
    assert detected.status_code == 200
    caller.wait_closed(timeout=15)  # the call ends its stream; Twilio asks what next
    stored = h.wait_ended(caller.call_sid)
    assert stored.row.end_reason == "voicemail_left" and stored.row.answered_by == answered_by
    after = signed_post(h, "/webhook/stream_ended", {"CallSid": caller.call_sid, "AccountSid": SID})
    root = ET.fromstring(after.text)
    say = root.find("Say")
    assert say.text == VOICEMAIL and say.get("language") == "he-IL" and root.find("Hangup") is not None
    assert conn.client_events("response.create") == [] and caller.heard_ms == 0
    assert twilio_rest.of("update") == []  # the call left it itself, not through a TwiML update


def test_a_business_without_a_message_leaves_one_in_its_name(make_outbound):
    h = make_outbound(voicemail_message="")
    caller = place_and_answer(h)
    session_configured(h)
    signed_post(h, "/webhook/amd_status", {"CallSid": caller.call_sid, "AccountSid": SID,
                                           "AnsweredBy": "machine_end_beep"})
    h.wait_ended(caller.call_sid, timeout=15)
    say = ET.fromstring(signed_post(h, "/webhook/stream_ended", {"CallSid": caller.call_sid,
                                                                 "AccountSid": SID}).text).find("Say")
    assert "מספרת הבדיקה" in say.text  # the test business's name


def test_a_fax_is_hung_up_on(make_outbound):
    h = make_outbound()
    caller = place_and_answer(h)
    conn = session_configured(h)
    signed_post(h, "/webhook/amd_status", {"CallSid": caller.call_sid, "AccountSid": SID, "AnsweredBy": "fax"})
    assert h.wait_ended(caller.call_sid, timeout=15).row.end_reason == "voicemail"
    root = ET.fromstring(signed_post(h, "/webhook/stream_ended", {"CallSid": caller.call_sid,
                                                                  "AccountSid": SID}).text)
    assert root.find("Say") is None and root.find("Hangup") is not None
    assert conn.client_events("response.create") == []


def test_a_person_is_greeted_as_soon_as_detection_says_so(make_outbound, twilio_rest):
    h = make_outbound()
    caller = place_and_answer(h)
    conn = session_configured(h)
    caller.speak(400)  # "hello?": no answer to it while the detection is awaited
    conn.wait_for_server_event("input_audio_buffer.committed", timeout=15)
    time.sleep(0.5)  # a response to it would be asked for at once
    assert conn.client_events("response.create") == []
    signed_post(h, "/webhook/amd_status", {"CallSid": caller.call_sid, "AccountSid": SID, "AnsweredBy": "human"})
    # Well inside the wait's 60 s: the greeting follows the result, not the bound.
    created = conn.wait_for_client_event("response.create", timeout=15)
    assert OUT_GREETING in created["response"]["instructions"]
    caller.wait_heard(800, timeout=15)
    stored = row(h, caller.call_sid)
    assert stored.answered_by == "human" and stored.end_reason is None and stored.first_words_at is not None
    assert twilio_rest.of("update") == []


def test_without_a_result_the_agent_greets_at_the_bound_and_a_late_machine_is_handled_by_twilio(
        make_outbound, twilio_rest):
    h = make_outbound(timing=dataclasses.replace(TEST_TIMING, amd_wait_s=SHORT_WAIT_S))
    before = time.monotonic()
    caller = place_and_answer(h)
    conn = session_configured(h)
    created = conn.wait_for_client_event("response.create", timeout=15)
    asked_at = next(e.t for e in conn.client_event_records("response.create"))
    # The wait began after `before` (the stream started after it): the greeting came no sooner than the bound.
    assert asked_at - before >= SHORT_WAIT_S
    assert OUT_GREETING in created["response"]["instructions"]
    caller.wait_heard(800, timeout=15)
    stored = row(h, caller.call_sid)
    assert stored.answered_by is None and stored.first_words_at is not None

    # The machine's result after the greeting: the live call's TwiML is replaced with the message.
    signed_post(h, "/webhook/amd_status", {"CallSid": caller.call_sid, "AccountSid": SID,
                                           "AnsweredBy": "machine_end_beep"})
    update = twilio_rest.wait_for(lambda: twilio_rest.of("update"), message="the TwiML to be replaced")[0]
    assert ET.fromstring(update.value("Twiml")).find("Say").text == VOICEMAIL
    caller.stop()  # Twilio ends the stream when the call's TwiML is replaced
    assert h.wait_ended(caller.call_sid).row.end_reason == "voicemail_left"


def test_inbound_calls_do_not_wait(make_harness):
    h = make_harness(RealtimeScript(responses=[Reply("שלום", 400)]), timing=LONG_WAIT)
    caller = h.call()
    caller.wait_heard(400, timeout=15)  # far sooner than the 60 s wait
    assert row(h, caller.call_sid).first_words_at is None


def test_detection_for_an_unknown_call_or_unsigned_is_refused_or_ignored(make_outbound):
    h = make_outbound()
    unknown = signed_post(h, "/webhook/amd_status", {"CallSid": "CA" + "0" * 32, "AccountSid": SID,
                                                     "AnsweredBy": "machine_end_beep"})
    assert unknown.status_code == 200 and ET.fromstring(unknown.text).find("Say") is None
    unsigned = requests.post(f"{h.live.base_url}/webhook/amd_status",
                             data={"CallSid": "CA" + "0" * 32, "AnsweredBy": "human"}, timeout=5)
    assert unsigned.status_code == 403
