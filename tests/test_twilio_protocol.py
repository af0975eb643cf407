"""Twilio Media Streams frames, parsed and built without sockets."""
import base64
import json

import pytest

from services import twilio_protocol as tw

START = {
    "event": "start", "sequenceNumber": "1", "streamSid": "MZ1",
    "start": {"streamSid": "MZ1", "accountSid": "AC1", "callSid": "CA1", "tracks": ["inbound"],
              "customParameters": {"call_sid": "CA1", "business_id": "7", "token": "t"},
              "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}},
}


def test_start_gives_call_and_parameters():
    event = tw.parse_frame(json.dumps(START))
    assert event == tw.Start(stream_sid="MZ1", call_sid="CA1",
                             parameters={"call_sid": "CA1", "business_id": "7", "token": "t"})


def test_media_keeps_the_payload_as_sent():
    payload = base64.b64encode(b"\xff" * 160).decode()
    event = tw.parse_frame(json.dumps({"event": "media", "media": {"track": "inbound", "payload": payload}}))
    assert event == tw.Media(payload=payload, track="inbound")


@pytest.mark.parametrize("message, reason", [
    ("not json{", "not_json"),
    (b"\x00\x01binary", "binary"),
    ("[1, 2]", "not_object"),
    ('{"event": "media", "media": {"payload": "%%%not-base64"}}', "bad_base64"),
    ('{"event": "media", "media": {"payload": ""}}', "bad_payload"),
    ('{"event": "media"}', "malformed"),
    ('{"event": "start", "start": {}}', "malformed"),
    ('{"event": "surprise"}', "unknown_event"),
])
def test_damaged_frames_name_their_damage(message, reason):
    with pytest.raises(tw.FrameError) as caught:
        tw.parse_frame(message)
    assert caught.value.reason == reason


def test_mark_dtmf_stop_connected():
    assert tw.parse_frame('{"event":"mark","mark":{"name":"item:1"}}') == tw.Mark("item:1")
    assert tw.parse_frame('{"event":"dtmf","dtmf":{"digit":"5"}}') == tw.Dtmf("5")
    assert tw.parse_frame('{"event":"stop","stop":{}}') == tw.Stop()
    assert tw.parse_frame('{"event":"connected","protocol":"Call"}') == tw.Connected()


def test_outgoing_messages_are_what_twilio_accepts():
    frame = bytes(range(160))
    media = json.loads(tw.media_message("MZ1", frame))
    assert media == {"event": "media", "streamSid": "MZ1", "media": {"payload": base64.b64encode(frame).decode()}}
    assert json.loads(tw.mark_message("MZ1", "item:a")) == {"event": "mark", "streamSid": "MZ1", "mark": {"name": "item:a"}}
    assert json.loads(tw.clear_message("MZ1")) == {"event": "clear", "streamSid": "MZ1"}
