"""The call's Realtime connection is opened as soon as Twilio's upgrade is accepted, while the
stream's `start` is on its way, and the call then runs on that same connection."""
from __future__ import annotations

import json

import websocket

from tests.fakes.realtime_server import RealtimeScript, Reply

GREETING = Reply("שלום, הגעתם למספרה", 400)


def _start_frame(call_sid: str, params: dict) -> str:
    return json.dumps({"event": "start", "streamSid": "MZearly", "start": {
        "streamSid": "MZearly", "callSid": call_sid, "customParameters": params,
        "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}}})


def test_the_connection_opens_before_start_and_the_call_runs_on_it(make_harness):
    h = make_harness(RealtimeScript(responses=[GREETING]))
    call_sid, placed = h.place()
    ws = websocket.create_connection(h.live.media_url, timeout=10)
    try:
        ws.send(json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}))
        early = h.fake.wait_for_connection(1)  # no `start` sent yet
        assert early.client_events() == []
        ws.send(_start_frame(call_sid, placed.parameters))
        update = early.wait_for_client_event("session.update")
        assert update["session"]["instructions"]
        early.wait_for_client_event("response.create")
        assert h.fake.connections == [early]
        ws.send(json.dumps({"event": "stop", "streamSid": "MZearly", "stop": {"callSid": call_sid}}))
    finally:
        ws.close()
    assert h.wait_ended(call_sid).row.end_reason == "caller_hangup"
    assert h.fake.wait_for(lambda: early.closed)
