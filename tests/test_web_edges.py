"""The web edge's less travelled paths, over loopback: what Twilio, a caller or an operator sees
when a business vanishes mid-setup, a limit or Twilio's REST API refuses, a stream never starts
or carries junk, a signature is wrong, a form lacks its CallSid, a transfer ends, or answering
machine detection reports a fax, an unknown call, or cannot be acted on."""
import json
import logging
import time
import xml.etree.ElementTree as ET

import pytest
import requests
import websocket
from twilio.request_validator import RequestValidator

from server import twiml
from server.routes.media import MAX_FRAMES_BEFORE_START, START_TIMEOUT_S
from services.store.models import Call
from tests.conftest import BUSINESS_NUMBER, CALLER_NUMBER
from tests.fakes.realtime_server import RealtimeScript, Reply
from tests.fakes.twilio_caller import FakeTwilioCall, parse_twiml, twilio_form
from tests.fakes.twilio_rest import FakeTwilioRest

SID = "AC" + "3" * 32
TOKEN = "web-edges-token"
PUBLIC = "https://agent.example.com"
LEAD = "+972541234567"
VOICEMAIL = "שלום, כאן מספרת הבדיקה, נשמח שתחזרו אלינו."
GREETING = Reply("שלום, הגעתם למספרת הבדיקה", 600)


def _row(h, call_sid: str) -> Call | None:
    with h.live.db.session() as session:
        call = session.query(Call).filter_by(call_sid=call_sid).one_or_none()
        if call is not None:
            session.expunge(call)
        return call


def _call_count(h) -> int:
    with h.live.db.session() as session:
        return session.query(Call).count()


def _messages(caplog, prefix: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.getMessage().startswith(prefix)]


def _start_frame(call_sid: str, params: dict) -> str:
    return json.dumps({"event": "start", "streamSid": "MZedge", "start": {
        "streamSid": "MZedge", "callSid": call_sid, "customParameters": params,
        "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}}})


def _close_code(ws: websocket.WebSocket) -> int:
    opcode, data = ws.recv_data(control_frame=True)
    assert opcode == websocket.ABNF.OPCODE_CLOSE, (opcode, data)
    return int.from_bytes(data[:2], "big")


# --- the media stream -----------------------------------------------------------------


def test_a_business_deleted_before_its_stream_opens_ends_the_call_with_an_apology(make_harness):
    h = make_harness(RealtimeScript(responses=[GREETING]))
    call_sid, placed = h.place()
    assert placed.stream_url
    assert requests.delete(f"{h.live.base_url}/api/businesses/{h.business_id}", timeout=5).status_code in (200, 204)

    caller = FakeTwilioCall(h.live.media_url, call_sid, placed.parameters).start()
    h.callers.append(caller)
    assert caller.wait_closed(timeout=10) is not None
    stored = h.wait_ended(call_sid)
    assert stored.row.end_reason == "business_not_found" and stored.turns == []
    assert h.fake.nothing_reached_the_model() and caller.heard_ms == 0
    after = h.stream_ended(call_sid)
    assert after.hangup and after.says == (twiml.APOLOGY_UNAVAILABLE,)


def test_a_stream_without_a_start_is_closed_once_the_start_timeout_passes(make_harness, caplog):
    h = make_harness()
    caplog.set_level(logging.WARNING, logger="media")
    ws = websocket.create_connection(h.live.media_url, timeout=START_TIMEOUT_S + 15)
    try:
        opened = time.monotonic()
        ws.send(json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}))
        assert _close_code(ws) == 1008
        assert time.monotonic() - opened >= START_TIMEOUT_S * 0.9, "closed before the start timeout"
    finally:
        ws.close()
    assert _messages(caplog, "no start frame within the time allowed")
    assert h.fake.nothing_reached_the_model()


def test_a_stream_of_frames_other_than_start_is_closed_after_a_few(make_harness, caplog):
    h = make_harness()
    caplog.set_level(logging.WARNING, logger="media")
    ws = websocket.create_connection(h.live.media_url, timeout=10)
    try:
        for _ in range(MAX_FRAMES_BEFORE_START):
            ws.send(json.dumps({"event": "mark", "streamSid": "MZ1", "mark": {"name": "m"}}))
        assert _close_code(ws) == 1008
    finally:
        ws.close()
    # Closed for the frames, not by the start timeout.
    lines = [r for r in caplog.records if r.getMessage() == "no start frame"]
    assert len(lines) == 1 and lines[0].frames == MAX_FRAMES_BEFORE_START
    assert not _messages(caplog, "no start frame within")


@pytest.mark.parametrize("business_id", ["abc", "", "-1", "1.5", "\u0661", "9" * 19])
def test_a_start_whose_business_id_is_not_a_number_is_refused(make_harness, caplog, business_id):
    h = make_harness()
    caplog.set_level(logging.WARNING, logger="media")
    call_sid, placed = h.place()
    params = dict(placed.parameters, business_id=business_id)
    ws = websocket.create_connection(h.live.media_url, timeout=10)
    try:
        ws.send(json.dumps({"event": "connected"}))
        ws.send(_start_frame(call_sid, params))
        assert _close_code(ws) == 1008
    finally:
        ws.close()
    refused = _messages(caplog, "stream refused")
    assert refused and refused[0].why == "no business_id parameter" and refused[0].call_sid == call_sid
    assert h.fake.nothing_reached_the_model()
    # The call's token is still unused: its own stream, when it comes, starts.
    assert _row(h, call_sid).stream_claimed_at is None


def _signed_place(h, call_sid: str):
    form = twilio_form(call_sid, CALLER_NUMBER, BUSINESS_NUMBER, account_sid=SID)
    signature = RequestValidator(TOKEN).compute_signature(f"{PUBLIC}/webhook/incoming_call", form)
    response = requests.post(f"{h.live.base_url}/webhook/incoming_call", data=form,
                             headers={"X-Twilio-Signature": signature}, timeout=5)
    return parse_twiml(response.status_code, response.text)


def test_the_https_form_of_the_stream_url_is_a_good_signature_behind_a_proxy(make_harness):
    h = make_harness(RealtimeScript(responses=[GREETING]), twilio_auth_token=TOKEN, public_base_url=PUBLIC)
    placed = _signed_place(h, "CA-https-form")
    assert placed.stream_url == "wss://agent.example.com/ws/twilio-media", placed.twiml
    # A TLS-terminating proxy may present the upgrade as https; Twilio signed that form of the URL.
    signature = RequestValidator(TOKEN).compute_signature("https://agent.example.com/ws/twilio-media", {})
    caller = FakeTwilioCall(h.live.media_url, "CA-https-form", placed.parameters, account_sid=SID,
                            headers={"X-Twilio-Signature": signature}).start()
    h.callers.append(caller)
    caller.wait_heard(GREETING.audio_ms, timeout=5)


@pytest.mark.parametrize("signed", [
    ("wss://agent.example.com/ws/twilio-media", "another-accounts-token"),  # not our token
    ("wss://elsewhere.example.com/ws/twilio-media", TOKEN),  # not our address
    ("http://agent.example.com/ws/twilio-media", TOKEN),  # not a form Twilio signs
])
def test_a_wrong_signature_on_the_stream_upgrade_is_refused(make_harness, caplog, signed):
    h = make_harness(twilio_auth_token=TOKEN, public_base_url=PUBLIC)
    caplog.set_level(logging.WARNING, logger="media")
    url, token = signed
    signature = RequestValidator(token).compute_signature(url, {})
    with pytest.raises(websocket.WebSocketBadStatusException) as refused:
        websocket.create_connection(h.live.media_url, timeout=5, header=[f"X-Twilio-Signature: {signature}"])
    assert refused.value.status_code == 403
    assert _messages(caplog, "rejected media stream: bad or missing X-Twilio-Signature")
    assert h.fake.connections == []  # refused before the upgrade: nothing opened for it


# --- the webhooks ---------------------------------------------------------------------


def test_a_wrong_webhook_signature_is_refused_and_stores_nothing(make_harness, caplog):
    h = make_harness(twilio_auth_token=TOKEN, public_base_url=PUBLIC)
    caplog.set_level(logging.WARNING, logger="webhooks")
    form = twilio_form("CA-wrong-signature", CALLER_NUMBER, BUSINESS_NUMBER, account_sid=SID)
    wrong = [
        RequestValidator("another-accounts-token").compute_signature(f"{PUBLIC}/webhook/incoming_call", form),
        RequestValidator(TOKEN).compute_signature(f"{h.live.base_url}/webhook/incoming_call", form),  # not public
        RequestValidator(TOKEN).compute_signature(f"{PUBLIC}/webhook/incoming_call",
                                                  {**form, "To": "+972300000099"}),  # other fields
    ]
    for signature in wrong:
        response = requests.post(f"{h.live.base_url}/webhook/incoming_call", data=form,
                                 headers={"X-Twilio-Signature": signature}, timeout=5)
        assert response.status_code == 403 and "invalid Twilio signature" in response.json()["error"]
    assert len(_messages(caplog, "rejected webhook: bad or missing X-Twilio-Signature")) == len(wrong)
    assert _call_count(h) == 0
    assert _signed_place(h, "CA-wrong-signature").stream_url  # the right one is let in


def test_a_signature_over_the_public_url_with_its_query_string_is_good(make_harness):
    h = make_harness(twilio_auth_token=TOKEN, public_base_url=PUBLIC)
    form = twilio_form("CA-query", CALLER_NUMBER, BUSINESS_NUMBER, account_sid=SID)
    path = "/webhook/incoming_call?tenant=a%20b"
    signature = RequestValidator(TOKEN).compute_signature(f"{PUBLIC}{path}", form)
    response = requests.post(f"{h.live.base_url}{path}", data=form, headers={"X-Twilio-Signature": signature},
                             timeout=5)
    assert response.status_code == 200 and parse_twiml(200, response.text).stream_url


@pytest.mark.parametrize("path,form", [
    ("/webhook/incoming_call", {"From": CALLER_NUMBER, "To": BUSINESS_NUMBER, "CallStatus": "ringing"}),
    ("/webhook/voice", {"From": CALLER_NUMBER, "To": BUSINESS_NUMBER}),
    ("/webhook/outbound_call", {"From": BUSINESS_NUMBER, "To": LEAD, "CallStatus": "in-progress"}),
    ("/webhook/call_status", {"From": CALLER_NUMBER, "To": BUSINESS_NUMBER, "CallStatus": "completed"}),
    ("/webhook/amd_status", {"AnsweredBy": "machine_end_beep"}),
    ("/webhook/recording_status", {"RecordingStatus": "completed", "RecordingSid": "RE1"}),
    ("/webhook/incoming_call", {"CallSid": "   ", "From": CALLER_NUMBER, "To": BUSINESS_NUMBER}),
])
def test_a_webhook_without_a_call_sid_is_a_400_and_stores_nothing(make_harness, path, form):
    h = make_harness()
    response = requests.post(f"{h.live.base_url}{path}", data=form, timeout=5)
    assert response.status_code == 400 and "CallSid" in response.json()["error"]
    assert _call_count(h) == 0


def test_a_transfer_answered_by_the_person_hangs_up_and_one_not_answered_apologises(make_harness):
    h = make_harness()
    call_sid, placed = h.place()
    assert placed.stream_url
    url = f"{h.live.base_url}/webhook/transfer_ended"

    taken = requests.post(url, data={"CallSid": call_sid, "DialCallStatus": "completed"}, timeout=5)
    assert taken.status_code == 200 and taken.headers["Content-Type"].startswith("text/xml")
    root = ET.fromstring(taken.text)
    assert root.find("Hangup") is not None and root.find("Say") is None
    assert _row(h, call_sid).transfer_status == "completed"

    for outcome in ("no-answer", "busy", "failed", ""):
        missed = parse_twiml(*(lambda r: (r.status_code, r.text))(
            requests.post(url, data={"CallSid": call_sid, "DialCallStatus": outcome}, timeout=5)))
        assert missed.status_code == 200 and missed.hangup and missed.says == (twiml.TRANSFER_FAILED,)
        assert ET.fromstring(missed.twiml).find("Say").get("language") == "he-IL"
        assert _row(h, call_sid).transfer_status == (outcome or None)
    # A transfer of a call we have no row for still gets its answer.
    unknown = parse_twiml(*(lambda r: (r.status_code, r.text))(
        requests.post(url, data={"CallSid": "CA-unknown", "DialCallStatus": "no-answer"}, timeout=5)))
    assert unknown.status_code == 200 and unknown.says == (twiml.TRANSFER_FAILED,)
    assert _row(h, "CA-unknown") is None


# --- the outbound call API -------------------------------------------------------------


def _outbound(make_harness, twilio_rest, business=None, **settings):
    return make_harness(RealtimeScript(responses=[GREETING]),
                        business={"voicemail_message": VOICEMAIL, **(business or {})},
                        twilio_account_sid=SID, twilio_auth_token=TOKEN, twilio_api_base_url=twilio_rest.base_url,
                        **settings)


def _place_outbound(h) -> requests.Response:
    return requests.post(f"{h.live.base_url}/api/calls/outbound", json={"business_id": h.business_id, "to": LEAD},
                         timeout=10)


def _signed(h, path: str, form: dict) -> requests.Response:
    url = f"{h.live.base_url}{path}"
    signature = RequestValidator(TOKEN).compute_signature(url, form)
    return requests.post(url, data=form, headers={"X-Twilio-Signature": signature}, timeout=10)


def _answer_outbound(h, call_sid: str) -> None:
    answered = _signed(h, "/webhook/outbound_call", {"CallSid": call_sid, "AccountSid": SID, "From": BUSINESS_NUMBER,
                                                     "To": LEAD, "Direction": "outbound-api",
                                                     "CallStatus": "in-progress"})
    assert parse_twiml(answered.status_code, answered.text).stream_url, answered.text


@pytest.mark.parametrize("limit", ["business", "server"])
def test_an_outbound_call_over_a_limit_is_a_409_and_never_reaches_twilio(make_harness, twilio_rest, limit):
    if limit == "business":
        h = _outbound(make_harness, twilio_rest, business={"max_concurrent_calls": 1})
    else:
        h = _outbound(make_harness, twilio_rest, business={"max_concurrent_calls": 10}, max_concurrent_calls=1)
    first = _place_outbound(h)
    assert first.status_code == 201, first.text
    _answer_outbound(h, first.json()["call_sid"])  # the first call holds the one slot
    refused = _place_outbound(h)
    assert refused.status_code == 409
    assert refused.json()["error"] == f"the {limit} is at its limit of concurrent calls"
    assert len(twilio_rest.of("create")) == 1
    assert _call_count(h) == 1


@pytest.mark.parametrize("status,code", [(500, 20500), (503, 20503)])
def test_twilio_failing_to_place_a_call_is_a_502_and_stores_no_call(make_harness, twilio_rest, status, code):
    h = _outbound(make_harness, twilio_rest)
    twilio_rest.fail_next(status, code, "Service is unavailable. Please try again")
    failed = _place_outbound(h)
    assert failed.status_code == 502
    assert failed.json()["error"].startswith("Twilio did not place the call")
    assert len(twilio_rest.of("create")) == 1 and _call_count(h) == 0
    assert _place_outbound(h).status_code == 201  # Twilio is back


def test_twilio_out_of_reach_is_a_502(make_harness):
    with FakeTwilioRest() as gone:
        closed_url = gone.base_url
    h = make_harness(twilio_account_sid=SID, twilio_auth_token=TOKEN, twilio_api_base_url=closed_url)
    failed = _place_outbound(h)
    assert failed.status_code == 502 and "could not be reached" in failed.json()["error"]
    assert _call_count(h) == 0


# --- answering machine detection ------------------------------------------------------


def test_a_fax_is_hung_up_on_without_the_voicemail_message(make_harness, twilio_rest):
    h = _outbound(make_harness, twilio_rest)
    call_sid = _place_outbound(h).json()["call_sid"]
    answered = _signed(h, "/webhook/amd_status", {"CallSid": call_sid, "AccountSid": SID, "AnsweredBy": "fax"})
    assert answered.status_code == 200 and ET.fromstring(answered.text).tag == "Response"
    assert list(ET.fromstring(answered.text)) == []
    updates = twilio_rest.wait_for(lambda: twilio_rest.of("update"), message="the fax's call to be hung up")
    assert len(updates) == 1 and updates[0].call_sid == call_sid
    replaced = ET.fromstring(updates[0].value("Twiml"))
    assert replaced.find("Hangup") is not None and replaced.find("Say") is None
    row = _row(h, call_sid)
    assert (row.answered_by, row.end_reason) == ("fax", "voicemail")


def test_machine_detection_for_an_unknown_call_acts_on_nothing(make_harness, twilio_rest, caplog):
    h = _outbound(make_harness, twilio_rest)
    caplog.set_level(logging.WARNING, logger="webhooks")
    answered = _signed(h, "/webhook/amd_status", {"CallSid": "CA-not-ours", "AccountSid": SID,
                                                  "AnsweredBy": "machine_end_beep"})
    assert answered.status_code == 200 and list(ET.fromstring(answered.text)) == []
    lines = _messages(caplog, "machine detection for an unknown call")
    assert len(lines) == 1 and lines[0].call_sid == "CA-not-ours"
    assert twilio_rest.of("update") == [] and _row(h, "CA-not-ours") is None


def test_a_twilio_error_while_leaving_the_voicemail_is_logged_and_the_detection_kept(make_harness, twilio_rest,
                                                                                    caplog):
    h = _outbound(make_harness, twilio_rest)
    caplog.set_level(logging.ERROR, logger="webhooks")
    call_sid = _place_outbound(h).json()["call_sid"]
    twilio_rest.fail_next(500, 20500, "Internal Server Error")
    answered = _signed(h, "/webhook/amd_status", {"CallSid": call_sid, "AccountSid": SID,
                                                  "AnsweredBy": "machine_end_beep"})
    assert answered.status_code == 200 and list(ET.fromstring(answered.text)) == []
    attempt = twilio_rest.of("update")
    assert len(attempt) == 1 and ET.fromstring(attempt[0].value("Twiml")).find("Say").text == VOICEMAIL
    lines = _messages(caplog, "could not leave the voicemail")
    assert len(lines) == 1 and lines[0].call_sid == call_sid and "Internal Server Error" in lines[0].error
    row = _row(h, call_sid)
    assert (row.answered_by, row.end_reason) == ("machine_end_beep", "voicemail")
