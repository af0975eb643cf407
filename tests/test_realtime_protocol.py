"""Realtime GA events, parsed and built without sockets; client events validated strictly."""
import base64
import json

import pytest

from services import realtime_protocol as rt


def test_audio_delta_is_decoded():
    audio = b"\x01\x02" * 80
    event = rt.parse_server_event(json.dumps({
        "type": "response.output_audio.delta", "event_id": "e", "response_id": "r1", "item_id": "i1",
        "output_index": 0, "content_index": 0, "delta": base64.b64encode(audio).decode()}))
    assert event == rt.AudioDelta(response_id="r1", item_id="i1", audio=audio)


def test_response_done_carries_usage_and_function_calls():
    event = rt.parse_server_event(json.dumps({"type": "response.done", "event_id": "e", "response": {
        "id": "r1", "status": "completed", "output": [
            {"type": "message", "id": "i1"},
            {"type": "function_call", "id": "i2", "call_id": "c1", "name": "end_call", "arguments": "{}"}],
        "usage": {"total_tokens": 30, "input_tokens": 20, "output_tokens": 10,
                  "input_token_details": {"text_tokens": 5, "audio_tokens": 15, "cached_tokens": 4},
                  "output_token_details": {"text_tokens": 2, "audio_tokens": 8}}}}))
    assert event.status == "completed"
    assert event.usage == rt.Usage(input_text=5, input_audio=15, input_cached=4, output_text=2, output_audio=8)
    assert event.function_calls == (rt.FunctionCall(call_id="c1", name="end_call", arguments="{}"),)


def test_vad_and_transcription_events():
    assert rt.parse_server_event('{"type":"input_audio_buffer.speech_started","audio_start_ms":120,"item_id":"u1"}') \
        == rt.SpeechStarted(item_id="u1")
    assert rt.parse_server_event('{"type":"input_audio_buffer.committed","item_id":"u1"}') == rt.InputCommitted("u1")
    assert rt.parse_server_event(json.dumps({
        "type": "conversation.item.input_audio_transcription.completed", "item_id": "u1",
        "content_index": 0, "transcript": "שלום"})) == rt.InputTranscript(item_id="u1", transcript="שלום")


def test_unknown_types_are_ignored_and_junk_is_an_error():
    assert rt.parse_server_event('{"type":"rate_limits.updated"}') == rt.Ignored("rate_limits.updated")
    # Types the call does not act on are not read further, whatever they hold.
    assert rt.parse_server_event('{"type":"session.created","session":{}}') == rt.Ignored("session.created")
    assert rt.parse_server_event('{"type":"conversation.item.truncated"}') == rt.Ignored("conversation.item.truncated")
    with pytest.raises(rt.ProtocolError):
        rt.parse_server_event("not json")
    with pytest.raises(rt.ProtocolError):
        rt.parse_server_event('{"type":"response.output_audio.delta","delta":"@@"}')


def test_each_builder_says_what_it_was_given():
    # The builders validate what they build themselves; what matters here is what they say.
    def built(text):
        return json.loads(text)

    assert built(rt.response_create()) == {"type": "response.create"}
    assert built(rt.response_create("Say hello.")) == {"type": "response.create",
                                                       "response": {"instructions": "Say hello."}}
    assert built(rt.response_cancel()) == {"type": "response.cancel"}
    assert built(rt.response_cancel("r1")) == {"type": "response.cancel", "response_id": "r1"}
    assert built(rt.item_truncate("i1", 840)) == {"type": "conversation.item.truncate", "item_id": "i1",
                                                  "content_index": 0, "audio_end_ms": 840}
    assert built(rt.item_truncate("i1", -20))["audio_end_ms"] == 0
    for builder, role, part in ((rt.system_message, "system", "input_text"), (rt.user_text_message, "user", "input_text"),
                                (rt.assistant_text_message, "assistant", "output_text")):
        assert built(builder("שלום, 1")) == {"type": "conversation.item.create", "item": {
            "type": "message", "role": role, "content": [{"type": part, "text": "שלום, 1"}]}}
    assert built(rt.function_call_output("c1", '{"ok":true}')) == {"type": "conversation.item.create", "item": {
        "type": "function_call_output", "call_id": "c1", "output": '{"ok":true}'}}


def test_the_audio_append_built_by_hand_is_a_valid_event_carrying_the_payload_untouched():
    payload = base64.b64encode(bytes(range(160))).decode()
    text = rt.audio_append(payload)
    rt.validate_client_event(text)  # the one builder that skips validation (it runs 50 times a second)
    assert json.loads(text) == {"type": "input_audio_buffer.append", "audio": payload}


def test_session_update_carries_the_calls_instructions_voice_and_transcription():
    instructions = "# מספרת הבדיקה\n\nמספרת הבדיקה היא מספרה בתל אביב. \"מחירים\" בשקלים."
    session = json.loads(rt.session_update(rt.SessionConfig(instructions=instructions, voice="coral",
                                                            transcription_prompt="מספרת הבדיקה, תספורת")))["session"]
    assert session["type"] == "realtime" and session["instructions"] == instructions
    assert session["output_modalities"] == ["audio"]
    assert session["audio"]["input"]["transcription"] == {"model": "gpt-4o-transcribe", "language": "he",
                                                          "prompt": "מספרת הבדיקה, תספורת"}
    assert "tools" not in session and "tool_choice" not in session, "no tools declared, none offered"


def test_session_update_leaves_responses_to_the_server_logic():
    session = json.loads(rt.session_update(rt.SessionConfig(instructions="x", voice="coral",
                                                            transcription_prompt="p")))["session"]
    vad = session["audio"]["input"]["turn_detection"]
    assert vad == {"type": "server_vad", "threshold": 0.5, "silence_duration_ms": 400, "prefix_padding_ms": 300,
                   "create_response": False, "interrupt_response": False}
    assert session["audio"]["input"]["format"] == {"type": "audio/pcmu"}
    assert session["audio"]["output"] == {"format": {"type": "audio/pcmu"}, "voice": "coral"}
    assert session["audio"]["input"]["transcription"]["language"] == "he"


@pytest.mark.parametrize("event", [
    {"type": "response.create", "unexpected": True},
    {"type": "session.update", "session": {"type": "realtime", "audio": {"input": {"format": {"type": "audio/pcmu", "rate": 8000}}}}},
    {"type": "conversation.item.truncate", "item_id": "i1"},
    {"type": "no.such.event"},
])
def test_validator_rejects_what_the_api_would(event):
    with pytest.raises(rt.ProtocolError):
        rt.validate_client_event(event)


def test_tools_are_declared_as_ga_function_tools():
    tool = rt.FunctionTool(name="end_call", description="End the call.",
                           parameters={"type": "object", "properties": {"reason": {"type": "string"}},
                                       "required": ["reason"], "additionalProperties": False})
    text = rt.session_update(rt.SessionConfig(instructions="x", voice="alloy", transcription_prompt="p", tools=[tool]))
    session = json.loads(text)["session"]
    assert session["tools"] == [{"type": "function", "name": "end_call", "description": "End the call.",
                                 "parameters": tool.parameters}]
    assert session["tool_choice"] == "auto"


# --- hostile input: only ProtocolError escapes ------------------------------------------

from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402

PROPERTY = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12)
KNOWN_TYPES = sorted(rt._PARSERS) + ["response.output_audio.delta"]
KEYS = ["response", "response_id", "item_id", "item", "delta", "transcript", "error", "id", "type", "status",
        "output", "usage", "status_details", "call_id", "name", "arguments", "input_token_details",
        "output_token_details", "text_tokens", "audio_tokens", "cached_tokens", "code", "message", "reason"]
event_like = st.recursive(
    json_values,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(KEYS), inner, max_size=5),
    max_leaves=20)


def _parses_or_refuses(text):
    try:
        event = rt.parse_server_event(text)
    except rt.ProtocolError:
        return None
    # Every field the call reads holds its type: str fields strings, counts integers.
    for name in event.__slots__:
        value = getattr(event, name)
        if name in ("usage",) and value is not None:
            assert all(type(getattr(value, f)) is int for f in value.__slots__)
        elif name == "function_calls":
            assert all(isinstance(v, str) for call in value for v in (call.call_id, call.name, call.arguments))
        elif name == "audio":
            assert isinstance(value, bytes)
        elif name == "fatal":
            assert isinstance(value, bool)
        else:
            assert value is None or isinstance(value, str), (name, value)
    return event


@PROPERTY
@given(st.sampled_from(KNOWN_TYPES), st.dictionaries(st.sampled_from(KEYS), event_like, max_size=6))
def test_any_known_event_with_any_fields_is_parsed_or_refused(kind, fields):
    _parses_or_refuses(json.dumps(dict(fields, type=kind)))


@PROPERTY
@given(json_values)
def test_any_json_document_is_parsed_or_refused(value):
    _parses_or_refuses(json.dumps(value))


@PROPERTY
@given(st.binary() | st.text())
def test_any_bytes_or_text_is_parsed_or_refused(data):
    _parses_or_refuses(data)


@pytest.mark.parametrize("text", [
    '{"type": ["response.done"]}',
    '{"type": "response.output_audio.delta", "response_id": "r", "item_id": "i", "delta": "\u05e9"}',
    '{"type": "response.output_audio.delta", "response_id": {}, "item_id": "i", "delta": "/w=="}',
    '{"type": "response.output_item.added", "response_id": "r", "item": [1]}',
    '{"type": "response.done", "response": []}',
    '{"type": "response.done", "response": {"output": [1]}}',
    '{"type": "response.done", "response": {"usage": {"input_token_details": {"text_tokens": Infinity}}}}',
    '{"type": "response.done", "response": {"usage": [1]}}',
    '{"type": "error", "error": ["boom"]}',
    '{"type": "response.output_audio_transcript.delta", "item_id": "i", "delta": 7}',
    '[' * 100_000 + ']' * 100_000,
    b'{"type": "\xff"}',
])
def test_events_that_crashed_the_parser_or_slipped_through_are_protocol_errors(text):
    with pytest.raises(rt.ProtocolError):
        rt.parse_server_event(text)
