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


def test_every_builder_emits_a_valid_client_event():
    config = rt.SessionConfig(instructions="Be brief.", voice="alloy", transcription_prompt="עברית")
    for text in (rt.session_update(config), rt.response_create(), rt.response_create("Say hello."),
                 rt.response_cancel(), rt.item_truncate("i1", 840), rt.system_message("context"),
                 rt.user_text_message("1"), rt.function_call_output("c1", "{}"),
                 rt.audio_append(base64.b64encode(b"\xff" * 160).decode())):
        rt.validate_client_event(text)


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
    rt.validate_client_event(text)
    session = json.loads(text)["session"]
    assert session["tools"] == [{"type": "function", "name": "end_call", "description": "End the call.",
                                 "parameters": tool.parameters}]
    assert session["tool_choice"] == "auto"
