"""Calls whose webhook was answered with stream TwiML but whose stream never started.

They hold a slot under the call limits only until the stream start timeout (the stream token's
expiry) and a margin have passed; then they are stored as over (`no_stream`), by the next
admission or status callback, and Twilio's own status callback still has the last word.
The timeout is shortened here; every wait is a bounded poll, and "too early" is judged by the
stored times against each other, never by the clock's value or the machine's speed.
"""
import dataclasses
import json
from datetime import timedelta

import pytest
import requests
import websocket
from alembic import command
from twilio.request_validator import RequestValidator

from server.security import StreamToken
from services.settings import Settings, SettingsError
from services.store.db import Database, alembic_config
from services.store.models import Call, as_utc
from tests.conftest import BUSINESS_NUMBER
from tests.fakes.realtime_server import RealtimeScript, Reply
from tests.fakes.twilio_caller import parse_twiml
from tests.fakes.twilio_rest import FakeTwilioRest
from tests.fakes.waiting import wait_for
from tests.harness import TEST_TIMING

# Long enough that a few webhooks in a row all fall inside it on a loaded machine.
TIMEOUT_S = 2.0
MARGIN_S = 0.5
TIMING = dataclasses.replace(TEST_TIMING, stream_start_timeout_s=TIMEOUT_S, stream_start_margin_s=MARGIN_S)
GREETING = Reply("שלום, הגעתם למספרת הבדיקה", 600)
BUSY = "תפוסים"


def _row(h, call_sid: str) -> Call:
    return h.stored(call_sid).row


def _token_expiry(placed) -> int:
    return int(placed.parameters["token"].partition(".")[0])


def _is_busy(placed) -> bool:
    return placed.stream_url is None and placed.hangup and any(BUSY in said for said in placed.says)


def _closed_late_enough(row: Call) -> bool:
    """Stored as a lost stream, and not before its deadline and margin had passed."""
    return (row.status, row.end_reason) == ("completed", "no_stream") and row.ended_at is not None and (
        as_utc(row.ended_at) > as_utc(row.stream_due_by) + timedelta(seconds=MARGIN_S))


def test_calls_whose_stream_never_came_free_their_slots_after_the_stream_start_timeout(make_harness):
    lost_count = 2
    h = make_harness(RealtimeScript(responses=[GREETING]), timing=TIMING,
                     business={"max_concurrent_calls": lost_count + 1})
    # A call whose stream did start: it must keep its slot past any stream deadline.
    streaming = h.call()
    streaming.wait_heard(GREETING.audio_ms, timeout=5)
    wait_for(lambda: _row(h, streaming.call_sid).stream_sid, timeout=5, message="the stream's sid to be stored")

    lost = [h.place() for _ in range(lost_count)]
    for sid, placed in lost:
        assert placed.stream_url, placed.twiml
        row = _row(h, sid)
        assert row.status == "ringing" and row.stream_sid is None
        due = as_utc(row.stream_due_by)
        # Due the timeout after the webhook, and the stream token expires no later.
        assert timedelta(0) < due - as_utc(row.started_at) <= timedelta(seconds=TIMEOUT_S)
        assert _token_expiry(placed) == int(due.timestamp())
    assert _is_busy(h.place()[1]), "the lost calls hold their slots until the timeout"

    # Once the timeout (and margin) passed, each admission finds the lost calls closed; a call
    # refused meanwhile is stored as refused and holds nothing.
    admitted = [wait_for(lambda: (lambda p: p[0] if p[1].stream_url else None)(h.place()), timeout=TIMEOUT_S + 10,
                         interval=0.1, message="a call to be admitted after the timeout")
                for _ in range(lost_count)]
    for sid, _ in lost:
        assert _closed_late_enough(_row(h, sid)), vars(_row(h, sid))
    first_admitted = _row(h, admitted[0])
    assert as_utc(first_admitted.started_at) > as_utc(_row(h, lost[0][0]).stream_due_by) + timedelta(seconds=MARGIN_S)
    # The streaming call and the new ones fill the business's slots again.
    assert _is_busy(h.place()[1])
    live = _row(h, streaming.call_sid)
    assert (live.status, live.end_reason, live.ended_at) == ("in-progress", None, None)
    assert not streaming.closed

    # Too late to start: the token has expired with the slot.
    sid, placed = lost[0]
    ws = websocket.create_connection(h.live.media_url, timeout=5)
    try:
        ws.send(json.dumps({"event": "connected"}))
        ws.send(json.dumps({"event": "start", "streamSid": "MZlate", "start": {
            "streamSid": "MZlate", "callSid": sid, "customParameters": placed.parameters,
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}}}))
        opcode, data = ws.recv_data(control_frame=True)
        assert opcode == websocket.ABNF.OPCODE_CLOSE and int.from_bytes(data[:2], "big") == 1008
    finally:
        ws.close()
    assert _row(h, sid).stream_sid is None

    # Twilio's status callback, when it comes, says how the call really ended.
    first, second = lost[0][0], lost[1][0]
    closed_at = as_utc(_row(h, first).ended_at)
    for sid, form in ((first, {"CallStatus": "completed", "CallDuration": "12"}), (second, {"CallStatus": "canceled"})):
        answer = requests.post(f"{h.live.base_url}/webhook/call_status", data={"CallSid": sid, **form}, timeout=5)
        assert answer.status_code == 200, answer.text
    row = _row(h, first)
    assert (row.status, row.end_reason, row.duration_s) == ("completed", "caller_hangup", 12.0)
    assert as_utc(row.ended_at) >= closed_at
    row = _row(h, second)
    assert (row.status, row.end_reason) == ("canceled", "canceled") and row.duration_s is not None


SID = "AC" + "2" * 32
TOKEN = "lost-streams-token"
LEAD = "+972541234567"


@pytest.fixture
def outbound(make_harness):
    rest = FakeTwilioRest().start()
    h = make_harness(timing=TIMING, business={"max_concurrent_calls": 1}, twilio_account_sid=SID,
                     twilio_auth_token=TOKEN, twilio_api_base_url=rest.base_url)
    yield h
    rest.stop()


def _signed_post(h, path: str, form: dict) -> requests.Response:
    url = f"{h.live.base_url}{path}"
    signature = RequestValidator(TOKEN).compute_signature(url, form)
    return requests.post(url, data=form, headers={"X-Twilio-Signature": signature}, timeout=5)


def _place_outbound(h) -> requests.Response:
    return requests.post(f"{h.live.base_url}/api/calls/outbound", json={"business_id": h.business_id, "to": LEAD},
                         timeout=5)


def test_an_outbound_call_is_due_from_its_answer_and_a_status_callback_closes_it_when_lost(outbound):
    h = outbound
    placed = _place_outbound(h)
    assert placed.status_code == 201, placed.text
    sid = placed.json()["call_sid"]
    assert _row(h, sid).stream_due_by is None, "not due before the callee answers"

    answered = parse_twiml(*(lambda r: (r.status_code, r.text))(_signed_post(h, "/webhook/outbound_call", {
        "CallSid": sid, "AccountSid": SID, "From": BUSINESS_NUMBER, "To": LEAD, "Direction": "outbound-api",
        "CallStatus": "in-progress"})))
    assert answered.stream_url, answered.twiml
    row = _row(h, sid)
    assert row.status == "in-progress" and row.stream_due_by is not None
    assert _token_expiry(answered) == int(as_utc(row.stream_due_by).timestamp())
    assert _place_outbound(h).status_code == 409, "the answered call holds the business's one slot"

    # Placing a call takes no lock and closes nothing, but no longer counts a lost stream.
    retried = wait_for(lambda: (lambda r: r if r.status_code == 201 else None)(_place_outbound(h)),
                       timeout=TIMEOUT_S + 10, interval=0.1, message="room for an outbound call after the timeout")
    assert _row(h, sid).status == "in-progress"
    # Any status callback stores the lost calls as over, under the admissions' lock.
    assert _signed_post(h, "/webhook/call_status", {"CallSid": retried.json()["call_sid"], "AccountSid": SID,
                                                     "CallStatus": "ringing"}).status_code == 200
    assert _closed_late_enough(_row(h, sid)), vars(_row(h, sid))
    # Twilio's final word wins.
    assert _signed_post(h, "/webhook/call_status", {"CallSid": sid, "AccountSid": SID, "CallStatus": "completed",
                                                     "CallDuration": "31"}).status_code == 200
    row = _row(h, sid)
    assert (row.status, row.end_reason, row.duration_s) == ("completed", "caller_hangup", 31.0)


def test_a_refused_call_is_never_due_and_keeps_its_end_reason(make_harness):
    h = make_harness(timing=TIMING, business={"max_concurrent_calls": 1})
    assert h.place()[1].stream_url
    refused_sid, refused = h.place()
    assert _is_busy(refused)
    row = _row(h, refused_sid)
    assert row.stream_due_by is None and row.end_reason == "limit"
    requests.post(f"{h.live.base_url}/webhook/call_status", data={"CallSid": refused_sid, "CallStatus": "completed"},
                  timeout=5)
    assert _row(h, refused_sid).end_reason == "limit"


def test_the_stream_start_timeout_is_read_from_the_environment():
    assert Settings.from_env({"SECRET_KEY": "x"}).timing.stream_start_timeout_s == 30.0
    assert Settings.from_env({"SECRET_KEY": "x", "STREAM_START_TIMEOUT_S": "12.5"}).timing.stream_start_timeout_s == 12.5
    for bad in ("0", "soon", "-3", "100000"):
        with pytest.raises(SettingsError, match="STREAM_START_TIMEOUT_S"):
            Settings.from_env({"SECRET_KEY": "x", "STREAM_START_TIMEOUT_S": bad})


def test_a_stream_token_expires_at_its_due_time_never_later():
    token = StreamToken("s")
    issued = token.issue_until("CA1", 1000.9)
    assert token.verify("CA1", issued, now=1000.0) is None
    assert token.verify("CA1", issued, now=1000.5) == "expired"


def test_the_migration_adds_and_removes_the_stream_due_time(tmp_path):
    url = f"sqlite:///{tmp_path / 'migrate.db'}"
    db = Database(url)
    try:
        db.upgrade()
        command.downgrade(alembic_config(db.url), "0005")
        with db.engine.connect() as connection:
            assert "stream_due_by" not in connection.exec_driver_sql(
                "SELECT sql FROM sqlite_master WHERE name = 'calls'").scalar()
        db.upgrade()
        with db.engine.connect() as connection:
            indexes = connection.exec_driver_sql(
                "SELECT sql FROM sqlite_master WHERE name = 'ix_calls_awaiting_stream'").scalar()
        assert "WHERE stream_sid IS NULL AND ended_at IS NULL" in indexes
    finally:
        db.dispose()
