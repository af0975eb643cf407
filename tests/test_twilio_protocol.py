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


# --- hostile input: only FrameError escapes -------------------------------------------

from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402

PROPERTY = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12)


def _replace_at(value, path, new):
    """A copy of `value` with the item at `path` (a list of keys) replaced by `new`."""
    if not path:
        return new
    copy = dict(value)
    copy[path[0]] = _replace_at(value[path[0]], path[1:], new)
    return copy


def _paths(value, prefix=()):
    yield list(prefix)
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _paths(item, prefix + (key,))


VALID_FRAMES = [
    START,
    {"event": "media", "streamSid": "MZ1", "media": {"track": "inbound", "chunk": "1", "timestamp": "20",
                                                      "payload": base64.b64encode(b"\xff" * 160).decode()}},
    {"event": "mark", "streamSid": "MZ1", "mark": {"name": "item:1"}},
    {"event": "dtmf", "streamSid": "MZ1", "dtmf": {"track": "inbound_track", "digit": "5"}},
    {"event": "stop", "streamSid": "MZ1", "stop": {"callSid": "CA1"}},
    {"event": "connected", "protocol": "Call", "version": "1.0.0"},
]
FIELDS = [(frame, path) for frame in VALID_FRAMES for path in _paths(frame)]


def _parses_or_refuses(message):
    try:
        event = tw.parse_frame(message)
    except tw.FrameError:
        return None
    # What it gives back holds the types the call relies on.
    if isinstance(event, tw.Start):
        assert isinstance(event.stream_sid, str) and isinstance(event.call_sid, str)
        assert all(isinstance(v, str) for v in event.parameters.values())
        assert type(event.sample_rate) is int and isinstance(event.encoding, str)
        assert '"' not in event.stream_sid and "\\" not in event.stream_sid
    elif isinstance(event, tw.Media):
        assert isinstance(event.payload, str) and isinstance(event.track, str)
    elif isinstance(event, tw.Mark):
        assert isinstance(event.name, str)
    elif isinstance(event, tw.Dtmf):
        assert event.digit in tw.DTMF_DIGITS
    return event


@PROPERTY
@given(st.sampled_from(FIELDS), json_values)
def test_any_json_value_in_any_field_is_parsed_or_refused(field, value):
    frame, path = field
    _parses_or_refuses(json.dumps(_replace_at(frame, path, value)))


@PROPERTY
@given(json_values)
def test_any_json_document_is_parsed_or_refused(value):
    _parses_or_refuses(json.dumps(value))


@PROPERTY
@given(st.text() | st.binary())
def test_any_text_or_bytes_is_parsed_or_refused(message):
    _parses_or_refuses(message)


@pytest.mark.parametrize("message", [
    '{"event": "start", "start": {"streamSid": "MZ1", "callSid": "CA1", "mediaFormat": {"sampleRate": "fast"}}}',
    '{"event": "start", "start": {"streamSid": "MZ1", "callSid": "CA1", "mediaFormat": {"sampleRate": Infinity}}}',
    '{"event": "start", "start": {"streamSid": "MZ1", "callSid": "CA1", "customParameters": ["a", "b"]}}',
    '{"event": "start", "start": {"streamSid": "MZ1", "callSid": "CA1", "mediaFormat": [1]}}',
    '{"event": "start", "start": ["MZ1"]}',
    '{"event": "start", "start": {"streamSid": "MZ\\"}, \\"x\\": \\"", "callSid": "CA1"}}',
    '{"event": "media", "media": {"payload": "\u05e9\u05dc\u05d5\u05dd"}}',
    '{"event": "media", "media": {"payload": "/w==", "track": ["inbound"]}}',
    '{"event": "mark", "mark": {"name": {"deep": [1, 2]}}}',
    '{"event": "dtmf", "dtmf": {"digit": "55555"}}',
    '{"event": ' + "[" * 100_000 + "]" * 100_000 + "}",
    "[" * 100_000 + "]" * 100_000,
])
def test_frames_that_crashed_the_parser_or_slipped_through_are_frame_errors(message):
    with pytest.raises(tw.FrameError):
        tw.parse_frame(message)
