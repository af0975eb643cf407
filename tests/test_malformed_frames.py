"""Junk on one media socket harms neither the server nor a call next to it."""
import base64
import json
import logging

import requests
import websocket

from server.security import StreamToken
from server.stream_parameters import StreamParameters
from tests.fakes.realtime_server import RealtimeScript, Reply
from tests.fakes.twilio_caller import FakeTwilioCall

GREETING = Reply("שלום, הגעתם למספרת הבדיקה", 1000)
JUNK = [
    "this is not json",
    b"\x00\x01\x02 binary frame",
    "[1, 2, 3]",
    json.dumps({"event": "media", "media": {"payload": "%%% not base64 %%%"}}),
    json.dumps({"event": "media", "media": {}}),
    json.dumps({"event": "what-is-this", "x": 1}),
    json.dumps({"event": "media", "media": {"payload": base64.b64encode(b"\xff" * 160).decode() * 60}}),
]


def test_malformed_frames_are_dropped_and_counted_while_both_calls_go_on(make_harness):
    h = make_harness(RealtimeScript(responses=[GREETING, Reply("כן?", 800)]))
    victim = h.call()
    bystander = h.call()
    for junk in JUNK:
        victim.send_raw(junk)
    victim.wait_heard(1000, timeout=5)
    bystander.wait_heard(1000, timeout=5)
    victim.wait_quiet(150)
    victim.speak(600)
    victim.wait_heard(1800, timeout=5)  # the damaged call still converses
    victim.stop()
    bystander.stop()

    dropped = h.wait_ended(victim.call_sid).row.metrics["frames_dropped"]
    for reason in ("not_json", "binary", "not_object", "bad_base64", "malformed", "unknown_event", "bad_payload"):
        assert dropped.get(reason) == 1, (reason, dropped)
    assert h.wait_ended(bystander.call_sid).row.end_reason == "caller_hangup"
    assert requests.get(f"{h.live.base_url}/healthz", timeout=5).status_code == 200


class _EarlyFramesCall(FakeTwilioCall):
    """A stream that sends `early` frames on its socket after `connected` and before `start`."""

    def __init__(self, *args, early: list[str | bytes], **kwargs):
        super().__init__(*args, **kwargs)
        self.early = early

    def _send_json(self, message: dict, sequenced: bool = True) -> bool:
        if message["event"] == "start":
            for frame in self.early:
                self.send_raw(frame)
        return super()._send_json(message, sequenced)


def test_frames_before_start_are_dropped_and_the_call_starts_on_the_same_socket(make_harness, caplog):
    caplog.set_level(logging.WARNING, logger="media")
    h = make_harness(RealtimeScript(responses=[GREETING, Reply("כן?", 800)]))
    call_sid, placed = h.place()
    early = [json.dumps({"event": "media", "media": {"payload": base64.b64encode(b"\xff" * 160).decode()}}),
             "garbage before start"]
    caller = _EarlyFramesCall(h.live.media_url, call_sid, placed.parameters, early=early).start()
    h.callers.append(caller)
    caller.wait_heard(GREETING.audio_ms, timeout=5)
    caller.wait_quiet(150)
    caller.speak(600)
    caller.wait_heard(GREETING.audio_ms + 800, timeout=5)  # the call converses, on the socket the junk came on
    caller.stop()
    stored = h.wait_ended(call_sid)
    assert stored.row.end_reason == "caller_hangup" and stored.row.stream_sid == caller.stream_sid
    messages = [r.getMessage() for r in caplog.records if r.name == "media"]
    assert messages.count("frame before start dropped") == 1
    assert messages.count("dropped malformed frame before start") == 1


def _start_frame(call_sid, params):
    return json.dumps({"event": "start", "streamSid": "MZ1", "start": {
        "streamSid": "MZ1", "callSid": call_sid, "customParameters": params,
        "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}}})


def test_a_stream_with_a_bad_token_is_closed_without_reaching_the_model(make_harness):
    h = make_harness()
    call_sid, placed = h.place()
    subject = StreamParameters.from_start(call_sid, placed.parameters).signed_text()
    forged = dict(placed.parameters, token=StreamToken("not-our-secret").issue(subject, 600))
    other_call = dict(placed.parameters, call_sid="CA-other")
    other_business = dict(placed.parameters, business_id=str(int(placed.parameters["business_id"]) + 1))
    other_caller = dict(placed.parameters, **{"from": "+972500000000"})
    no_token = {k: v for k, v in placed.parameters.items() if k != "token"}
    junk_tokens = [dict(placed.parameters, token=t) for t in ("1.\u00e9", "\u0661\u0662.ab", "x" * 5000, ".")]
    for params in (forged, other_call, other_business, other_caller, no_token, *junk_tokens):
        ws = websocket.create_connection(h.live.media_url, timeout=5)
        ws.send(json.dumps({"event": "connected"}))
        ws.send(_start_frame(call_sid, params))
        opcode, data = ws.recv_data(control_frame=True)
        assert opcode == websocket.ABNF.OPCODE_CLOSE
        assert int.from_bytes(data[:2], "big") == 1008
        ws.close()
    assert h.fake.nothing_reached_the_model()


def test_an_expired_token_is_refused():
    token = StreamToken("s")
    issued = token.issue("CA1", ttl_s=60, now=1000)
    assert token.verify("CA1", issued, now=1059) is None
    assert token.verify("CA1", issued, now=1061) == "expired"


def test_with_an_auth_token_the_upgrade_needs_twilios_signature(make_harness):
    from twilio.request_validator import RequestValidator

    h = make_harness(twilio_auth_token="tok", public_base_url="https://agent.example.com")
    try:
        websocket.create_connection(h.live.media_url, timeout=5)
        raise AssertionError("an unsigned upgrade was accepted")
    except websocket.WebSocketBadStatusException as exc:
        assert exc.status_code == 403
    signature = RequestValidator("tok").compute_signature("wss://agent.example.com/ws/twilio-media", {})
    ws = websocket.create_connection(h.live.media_url, timeout=5, header=[f"X-Twilio-Signature: {signature}"])
    ws.close()


# Frames that once raised inside the parser: a call ended as server_error on any of them.
CRASHERS = [
    json.dumps({"event": "start", "start": {"streamSid": "MZ1", "callSid": "CA1", "mediaFormat": {"sampleRate": "x"}}}),
    json.dumps({"event": "start", "start": {"streamSid": "MZ1", "callSid": "CA1", "customParameters": ["a"]}}),
    json.dumps({"event": "start", "start": ["MZ1"]}),
    json.dumps({"event": "media", "media": {"payload": "שלום"}}),
    json.dumps({"event": "mark", "mark": {"name": {"deep": [1]}}}),
    json.dumps({"event": "dtmf", "dtmf": {"digit": ["5"]}}),
    '{"event": "start", "start": {"mediaFormat": {"sampleRate": Infinity}}}',
    "[" * 100_000 + "]" * 100_000,
]


def test_frames_that_crashed_the_parser_mid_call_are_dropped_and_the_call_goes_on(make_harness):
    h = make_harness(RealtimeScript(responses=[GREETING, Reply("כן?", 800)]))
    victim = h.call()
    victim.wait_heard(1000, timeout=5)
    for junk in CRASHERS:
        victim.send_raw(junk)
    victim.wait_quiet(150)
    victim.speak(600)
    victim.wait_heard(1800, timeout=5)
    victim.stop()
    stored = h.wait_ended(victim.call_sid)
    assert stored.row.end_reason == "caller_hangup"
    assert sum(stored.row.metrics["frames_dropped"].values()) == len(CRASHERS)
