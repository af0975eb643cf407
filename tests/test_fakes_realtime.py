"""The fake Realtime API on its own, driven by a websocket-client over loopback."""
import base64
import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import gevent
import pydantic
import pytest
import websocket
from openai import BaseModel as OpenAIModel
from openai.types.realtime import RealtimeServerEvent

from services import realtime_protocol as rp
from tests.fakes.realtime_server import (SESSION_EXPIRED, FailedTranscript, FakeRealtime, RealtimeScript, Reply,
                                         ServerError, ToolCall, agent_audio_byte)
from tests.fakes.waiting import wait_for

SERVER_EVENT = pydantic.TypeAdapter(RealtimeServerEvent)
# The real API's session object carries these; the SDK's session request type does not define them.
SESSION_EXTRAS = {"object", "id", "expires_at"}
SPEECH = base64.b64encode(b"\x28\xa8" * 80).decode()  # a level of 5884 (-15 dBFS)
SILENCE = base64.b64encode(b"\xff" * 160).decode()
HISS = base64.b64encode(b"\xf0\x70" * 80).decode()  # 120 (-49 dBFS): a line's noise, not speech
MURMUR = base64.b64encode(b"\x57\xd7" * 80).decode()  # 652 (-34 dBFS): speech at 0.5, not at 0.9
CONFIG = rp.SessionConfig(instructions="את נציגה של מספרה.", voice="alloy", transcription_prompt="שמות ותאריכים",
                          vad_silence_ms=200)


def unknown_keys(value, path: str) -> list[str]:
    found = []
    if isinstance(value, OpenAIModel):
        found += [f"{path}.{k}" for k in (value.model_extra or {})
                  if not (path.endswith(".session") and k in SESSION_EXTRAS)]
        for name in type(value).model_fields:
            found += unknown_keys(getattr(value, name), f"{path}.{name}")
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            found += unknown_keys(item, f"{path}[{i}]")
    return found


def assert_ga_server_event(event: dict) -> None:
    """The SDK's own server event types accept it, with no key they do not define; our parser reads it."""
    model = SERVER_EVENT.validate_python(event)
    assert unknown_keys(model, event["type"]) == []
    rp.parse_server_event(json.dumps(event))


class Client:
    """A Realtime client as our server is one: websocket-client, one greenlet always reading."""

    def __init__(self, fake: FakeRealtime, model: str = "gpt-realtime") -> None:
        self.ws = websocket.create_connection(f"{fake.url}?model={model}", header=["Authorization: Bearer sk-test"],
                                              timeout=5)
        self.events: list[tuple[float, dict]] = []
        self.closed_without_frame = False
        self.close_code = None
        self.close_reason = ""
        self.reader = gevent.spawn(self._read)

    def _read(self) -> None:
        while True:
            try:
                opcode, frame = self.ws.recv_data_frame(True)
            except (websocket.WebSocketException, OSError):
                self.closed_without_frame = True
                return
            if opcode == websocket.ABNF.OPCODE_CLOSE:
                self.close_code = int.from_bytes(frame.data[:2], "big") if frame.data else 1005
                self.close_reason = frame.data[2:].decode("utf-8", "replace")
                return
            if opcode == websocket.ABNF.OPCODE_TEXT:
                self.events.append((time.monotonic(), json.loads(frame.data)))

    def send(self, text: str) -> None:
        self.ws.send(text)

    def of(self, type: str) -> list[dict]:
        return [e for _, e in self.events if e["type"] == type]

    def at(self, type: str) -> list[float]:
        return [t for t, e in self.events if e["type"] == type]

    def wait(self, type: str, count: int = 1, timeout: float = 5.0) -> dict:
        wait_for(lambda: len(self.of(type)) >= count, timeout, message=f"{count}x {type}")
        return self.of(type)[count - 1]

    def types(self) -> list[str]:
        return [e["type"] for _, e in self.events]

    def barrier(self) -> None:
        """Until the fake has answered everything sent before: it reads events in order, and a
        cancel with nothing active is answered at once, with an error."""
        count = len(self.of("error"))
        self.send(rp.response_cancel())
        self.wait("error", count + 1)

    def close(self) -> None:
        self.reader.kill()
        self.ws.close(timeout=1)


@pytest.fixture
def make_client():
    clients = []

    def connect(fake: FakeRealtime) -> Client:
        client = Client(fake)
        clients.append(client)
        return client

    yield connect
    for client in clients:
        client.close()


def ready(make_fake_realtime, make_client, **script) -> tuple[FakeRealtime, Client]:
    fake = make_fake_realtime(RealtimeScript(**script))
    client = make_client(fake)
    client.send(rp.session_update(CONFIG))
    client.wait("session.updated")
    return fake, client


def test_session_created_then_session_update_is_echoed(make_fake_realtime, make_client):
    fake = make_fake_realtime()
    client = make_client(fake)
    created = client.wait("session.created")
    client.send(rp.session_update(CONFIG))
    updated = client.wait("session.updated")

    assert client.types()[:2] == ["session.created", "session.updated"]
    assert created["session"]["audio"]["input"]["format"] == {"type": "audio/pcm", "rate": 24000}
    session = updated["session"]
    assert session["instructions"] == CONFIG.instructions
    assert session["audio"]["input"]["format"] == {"type": "audio/pcmu"}
    assert session["audio"]["output"]["format"] == {"type": "audio/pcmu"}
    assert session["audio"]["output"]["voice"] == "alloy"
    assert session["audio"]["input"]["turn_detection"]["create_response"] is False
    conn = fake.connections[0]
    assert conn.authorization == "Bearer sk-test"
    assert conn.model == "gpt-realtime"
    assert fake.wait_for_event("session.update")["session"]["type"] == "realtime"
    assert fake.invalid_events == []
    for _, event in client.events:
        assert_ga_server_event(event)


def test_session_updated_only_answers_the_second_update(make_fake_realtime, make_client):
    fake = make_fake_realtime(RealtimeScript(session_updated="second"))
    client = make_client(fake)
    client.send(rp.session_update(CONFIG))
    client.barrier()
    assert client.of("session.updated") == []
    client.send(rp.session_update(CONFIG))
    client.wait("session.updated")
    client.barrier()
    conn = fake.connections[0]
    assert (conn.session_updates, conn.session_updated_sent) == (2, 1)
    assert len(client.of("session.updated")) == 1


def test_session_updated_never_and_delayed(make_fake_realtime, make_client):
    never = make_client(make_fake_realtime(RealtimeScript(session_updated="never")))
    slow_fake = make_fake_realtime(RealtimeScript(session_updated_delay_ms=300))
    slow = make_client(slow_fake)
    sent_at = time.monotonic()
    never.send(rp.session_update(CONFIG))
    slow.send(rp.session_update(CONFIG))
    slow.wait("session.updated")
    assert slow.at("session.updated")[0] - sent_at >= 0.28  # it waited; how much longer is the machine's business
    assert never.of("session.updated") == []


def test_refused_upgrade_is_an_http_500(make_fake_realtime):
    fake = make_fake_realtime(RealtimeScript(refuse_upgrade=True))
    with pytest.raises(websocket.WebSocketBadStatusException) as raised:
        websocket.create_connection(fake.url, header=["Authorization: Bearer sk-test"], timeout=5)
    assert raised.value.status_code == 500
    assert fake.refused[0]["Authorization"] == "Bearer sk-test"
    assert fake.connections == []


def test_server_vad_reports_speech_commits_and_transcribes(make_fake_realtime, make_client):
    fake, client = ready(make_fake_realtime, make_client, caller_transcripts=["אני רוצה לקבוע תור"],
                         transcript_timing="commit", transcript_deltas=False)
    for payload in [SILENCE] * 25 + [SPEECH] * 15 + [SILENCE] * 10:  # 500 ms quiet, 300 speech, 200 quiet
        client.send(rp.audio_append(payload))
    transcript = client.wait("conversation.item.input_audio_transcription.completed")
    started = client.of("input_audio_buffer.speech_started")[0]
    stopped = client.of("input_audio_buffer.speech_stopped")[0]

    assert started["audio_start_ms"] == 500 - 300  # includes the prefix padding, as the real API
    assert stopped["audio_end_ms"] == 1000
    assert started["item_id"] == stopped["item_id"] == transcript["item_id"]
    assert client.of("input_audio_buffer.committed")[0]["item_id"] == started["item_id"]
    added = client.of("conversation.item.added")[0]["item"]
    assert (added["id"], added["role"]) == (started["item_id"], "user")
    assert transcript["transcript"] == "אני רוצה לקבוע תור"
    order = [t for t in client.types() if t.startswith(("input_audio_buffer", "conversation.item.input"))]
    assert order == ["input_audio_buffer.speech_started", "input_audio_buffer.speech_stopped",
                     "input_audio_buffer.committed", "conversation.item.input_audio_transcription.completed"]

    for payload in [SPEECH] * 5 + [SILENCE] * 10:  # the script has run out: the default transcript
        client.send(rp.audio_append(payload))
    assert client.wait("conversation.item.input_audio_transcription.completed", 2)["transcript"] == "שלום"
    client.barrier()
    assert client.of("response.created") == [] and fake.responses == []  # never a response of its own
    assert fake.connections[0].input_ms == 1300
    assert fake.invalid_events == []
    for _, event in client.events:
        assert_ga_server_event(event)


def test_silence_shorter_than_the_session_setting_does_not_end_speech(make_fake_realtime, make_client):
    fake, client = ready(make_fake_realtime, make_client)
    for payload in [SPEECH] * 5 + [SILENCE] * 9 + [SPEECH] * 5 + [SILENCE] * 5:  # 180 ms gap < 200 ms
        client.send(rp.audio_append(payload))
    client.barrier()
    assert fake.connections[0].input_ms == 480
    assert len(client.of("input_audio_buffer.speech_started")) == 1
    assert client.of("input_audio_buffer.speech_stopped") == []


def test_response_create_streams_the_scripted_reply(make_fake_realtime, make_client):
    fake, client = ready(make_fake_realtime, make_client, responses=[Reply("שלום וברכה, במה אפשר לעזור?", 500)])
    client.send(rp.response_create("ברכי את המתקשר"))
    done = client.wait("response.done")

    deltas = client.of("response.output_audio.delta")
    audio = b"".join(base64.b64decode(d["delta"]) for d in deltas)
    assert len(deltas) == 5 and len(audio) == 500 * 8
    assert set(audio) == {agent_audio_byte(0)}
    transcript = "".join(d["delta"] for d in client.of("response.output_audio_transcript.delta"))
    assert transcript == "שלום וברכה, במה אפשר לעזור?"
    assert client.of("response.output_audio_transcript.done")[0]["transcript"] == transcript
    types = [t for t in client.types() if t.startswith("response.")]
    assert types[:4] == ["response.created", "response.output_item.added", "response.content_part.added",
                         "response.output_audio.delta"]
    assert types[-5:] == ["response.output_audio.done", "response.output_audio_transcript.done",
                          "response.content_part.done", "response.output_item.done", "response.done"]
    item_id = client.of("response.output_item.added")[0]["item"]["id"]
    assert item_id.startswith("item_") and {d["item_id"] for d in deltas} == {item_id}
    assert done["response"]["status"] == "completed"
    usage = done["response"]["usage"]
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]
    assert set(usage["input_token_details"]) >= {"text_tokens", "audio_tokens", "cached_tokens"}
    assert usage["output_token_details"]["audio_tokens"] == 10
    parsed = rp.parse_server_event(json.dumps(done))
    assert parsed.status == "completed" and parsed.usage.output_audio == 10
    record = fake.responses[0]
    assert (record.id, record.item_id, record.audio_ms_sent, record.instructions) == (
        done["response"]["id"], item_id, 500, "ברכי את המתקשר")
    for _, event in client.events:
        assert_ga_server_event(event)


def test_first_byte_delay_and_real_time_multiple(make_fake_realtime, make_client):
    fake, client = ready(make_fake_realtime, make_client, first_byte_ms=200, speed=2.0,
                         default_reply=Reply("אחת שתיים", 1000))
    client.send(rp.response_create())
    client.wait("response.done")
    created = client.at("response.created")[0]
    deltas = client.at("response.output_audio.delta")
    assert len(deltas) == 10
    # Lower bounds only: the fake waits at least this long; a loaded machine may add any delay.
    assert deltas[0] - created >= 0.18
    assert deltas[-1] - deltas[0] >= 0.4  # 9 chunks of 100 ms at twice real time: paced, not a burst


def test_second_response_create_while_active_is_an_error(make_fake_realtime, make_client):
    fake, client = ready(make_fake_realtime, make_client, speed=1.0, default_reply=Reply("רגע", 400))
    client.send(rp.response_create())
    client.wait("response.created")
    client.send(rp.response_create())
    error = client.wait("error")["error"]
    assert (error["type"], error["code"]) == ("invalid_request_error", "conversation_already_has_active_response")
    assert len(fake.double_responses) == 1
    client.wait("response.done")
    client.send(rp.response_create())  # once done, a new response is fine
    client.wait("response.done", 2)
    assert len(fake.double_responses) == 1
    assert len(client.of("response.created")) == 2


def test_invalid_client_events_are_recorded_and_answered(make_fake_realtime, make_client):
    fake, client = ready(make_fake_realtime, make_client)
    client.send(json.dumps({"type": "session.update", "session": {"type": "realtime", "voice_speed": 2}}))
    client.send(json.dumps({"type": "response.create", "response": {"instructions": "x"}, "extra": True}))
    client.send("not json")
    client.wait("error", 3)
    assert [e["error"]["type"] for e in client.of("error")] == ["invalid_request_error"] * 3
    assert len(fake.invalid_events) == 3
    assert client.of("response.created") == []  # a rejected event does nothing
    assert fake.connections[0].session_updates == 1


def test_cancel_stops_the_stream(make_fake_realtime, make_client):
    fake, client = ready(make_fake_realtime, make_client, speed=1.0,
                         responses=[Reply("משפט ארוך מאוד", 3000), Reply("קצר", 500)])
    client.send(rp.response_cancel())  # nothing active yet
    assert client.wait("error")["error"]["code"] == "response_cancel_not_active"
    client.send(rp.response_create())
    client.wait("response.output_audio.delta", 2)
    response_id = client.of("response.created")[0]["response"]["id"]
    client.send(rp.response_cancel(response_id))
    done = client.wait("response.done")
    # A second response streams for half a second at real time: the first one's chunks would
    # keep coming meanwhile had the cancel not stopped it.
    client.send(rp.response_create())
    client.wait("response.done", 2)

    assert done["response"]["status"] == "cancelled"
    assert done["response"]["status_details"]["reason"] == "client_cancelled"
    sent = fake.responses[0].audio_ms_sent
    assert 200 <= sent < 3000  # cut part-way: at least what the client saw, never the whole reply
    first = [(i, e) for i, (_, e) in enumerate(client.events) if e.get("response_id") == response_id
             or e.get("response", {}).get("id") == response_id]
    assert first[-1][1]["type"] == "response.done"  # nothing of it after its response.done
    assert sum(e["type"] == "response.output_audio.delta" for _, e in first) == sent // 100
    assert fake.responses[1].audio_ms_sent == 500
    conn = fake.connections[0]
    assert [c.cancelled for c in conn.cancels] == [None, response_id]
    assert len(conn.cancel_errors) == 1
    for _, event in client.events:
        assert_ga_server_event(event)


def test_truncate_within_and_beyond_the_audio_sent(make_fake_realtime, make_client):
    fake, client = ready(make_fake_realtime, make_client, default_reply=Reply("קצר", 500))
    client.send(rp.response_create())
    client.wait("response.done")
    item_id = fake.responses[0].item_id
    client.send(rp.item_truncate(item_id, 300))
    truncated = client.wait("conversation.item.truncated")
    assert (truncated["item_id"], truncated["audio_end_ms"]) == (item_id, 300)
    client.send(rp.item_truncate(item_id, 800))
    assert "shorter than 800ms" in client.wait("error")["error"]["message"]
    conn = fake.connections[0]
    assert [(t.item_id, t.audio_end_ms) for t in conn.truncates] == [(item_id, 300), (item_id, 800)]
    assert len(conn.truncate_errors) == 1


def test_conversation_item_create_is_added(make_fake_realtime, make_client):
    fake, client = ready(make_fake_realtime, make_client)
    client.send(rp.system_message("הלקוח ביקש לדבר עם נציג."))
    done = client.wait("conversation.item.done")
    assert client.of("conversation.item.added")[0]["item"]["id"] == done["item"]["id"]
    assert done["item"]["role"] == "system"
    assert fake.connections[0].items_created[0]["content"][0]["text"] == "הלקוח ביקש לדבר עם נציג."


def test_scripted_function_call(make_fake_realtime, make_client):
    fake, client = ready(make_fake_realtime, make_client,
                         responses=[ToolCall("book_appointment", {"date": "2025-03-02", "time": "10:00"})])
    client.send(rp.response_create())
    done = client.wait("response.done")
    args_done = client.of("response.function_call_arguments.done")[0]
    assert args_done["name"] == "book_appointment"
    assert json.loads(args_done["arguments"]) == {"date": "2025-03-02", "time": "10:00"}
    assert client.of("response.output_audio.delta") == []
    parsed = rp.parse_server_event(json.dumps(done))
    assert [(c.name, c.call_id) for c in parsed.function_calls] == [("book_appointment", args_done["call_id"])]
    client.send(rp.function_call_output(args_done["call_id"], '{"ok": true}'))
    client.wait("conversation.item.done", 2)
    client.send(rp.response_create())  # the script ran out: the default spoken reply
    client.wait("response.done", 2)
    assert fake.responses[1].audio_ms_sent == 1200
    for _, event in client.events:
        assert_ga_server_event(event)


def test_a_reply_may_end_with_a_function_call(make_fake_realtime, make_client):
    fake, client = ready(make_fake_realtime, make_client,
                         responses=[Reply("תודה ולהתראות", 200, then_call=ToolCall("end_call", {"reason": "done"}))])
    client.send(rp.response_create())
    done = client.wait("response.done")
    assert [item["type"] for item in done["response"]["output"]] == ["message", "function_call"]
    args_done = client.of("response.function_call_arguments.done")[0]
    assert args_done["output_index"] == 1 and args_done["name"] == "end_call"
    assert args_done["item_id"] != fake.responses[0].item_id
    assert sum(len(base64.b64decode(e["delta"])) for e in client.of("response.output_audio.delta")) == 200 * 8
    parsed = rp.parse_server_event(json.dumps(done))
    assert [c.name for c in parsed.function_calls] == ["end_call"]
    for _, event in client.events:
        assert_ga_server_event(event)


def test_drop_after_session_updated(make_fake_realtime, make_client):
    fake, client = ready(make_fake_realtime, make_client, drop_after_session_updated_s=0.2)
    updated_at = client.at("session.updated")[0]
    wait_for(lambda: client.reader.dead, 5, message="the socket to drop")
    assert client.closed_without_frame and client.close_code is None
    assert fake.connections[0].dropped_at - updated_at >= 0.15
    fake.wait_for(lambda: fake.connections[0].closed, message="the fake to see its connection closed")


def test_drop_after_responses(make_fake_realtime, make_client):
    fake, client = ready(make_fake_realtime, make_client, drop_after_responses=1, default_reply=Reply("ביי", 200))
    client.send(rp.response_create())
    wait_for(lambda: client.reader.dead, 5, message="the socket to drop")
    assert client.closed_without_frame
    assert len(client.of("response.done")) == 1


# --- the real API's less kind ways --------------------------------------------------------


def _speak(client: Client, speech_frames: int = 10, quiet_frames: int = 12, speech: str = SPEECH) -> None:
    for payload in [speech] * speech_frames + [SILENCE] * quiet_frames:  # quiet past the 200 ms setting
        client.send(rp.audio_append(payload))


def test_the_callers_transcript_comes_after_the_response_created_that_answers_it(make_fake_realtime, make_client):
    fake, client = ready(make_fake_realtime, make_client, caller_transcripts=["אני רוצה לקבוע תור"])
    _speak(client)
    committed = client.wait("input_audio_buffer.committed")
    client.barrier()
    assert client.of("conversation.item.input_audio_transcription.completed") == []  # held for the response
    client.send(rp.response_create())
    transcript = client.wait("conversation.item.input_audio_transcription.completed")
    client.wait("response.done")

    types = client.types()
    created = types.index("response.created")
    assert types[created + 1] == "rate_limits.updated"
    assert created < types.index("conversation.item.input_audio_transcription.delta") < types.index(
        "conversation.item.input_audio_transcription.completed") < types.index("response.done")
    deltas = client.of("conversation.item.input_audio_transcription.delta")
    assert "".join(d["delta"] for d in deltas) == transcript["transcript"] == "אני רוצה לקבוע תור"
    assert {d["item_id"] for d in deltas} == {transcript["item_id"]} == {committed["item_id"]}
    limits = client.of("rate_limits.updated")[0]["rate_limits"]
    assert [r["name"] for r in limits] == ["requests", "tokens"] and all(r["remaining"] < r["limit"] for r in limits)
    for _, event in client.events:
        assert_ga_server_event(event)


def test_without_a_response_the_transcript_comes_once_transcription_would_be_done(make_fake_realtime, make_client):
    fake, client = ready(make_fake_realtime, make_client, transcript_wait_ms=300, rate_limits=False)
    _speak(client)
    client.wait("input_audio_buffer.committed")
    committed_at = client.at("input_audio_buffer.committed")[0]
    client.wait("conversation.item.input_audio_transcription.completed")
    assert client.at("conversation.item.input_audio_transcription.completed")[0] - committed_at >= 0.28
    client.send(rp.response_create())
    client.wait("response.done")
    assert client.of("rate_limits.updated") == []
    assert len(client.of("conversation.item.input_audio_transcription.completed")) == 1  # not again


def test_a_failed_transcription_is_its_own_event_and_the_next_turn_is_transcribed(make_fake_realtime, make_client):
    fake, client = ready(make_fake_realtime, make_client, transcript_timing="commit",
                         caller_transcripts=[FailedTranscript(), "כן"])
    _speak(client)
    failed = client.wait("conversation.item.input_audio_transcription.failed")
    assert failed["item_id"] == client.of("input_audio_buffer.committed")[0]["item_id"]
    assert (failed["error"]["type"], failed["error"]["code"]) == ("transcription_error", "audio_unintelligible")
    parsed = rp.parse_server_event(json.dumps(failed))
    assert isinstance(parsed, rp.InputTranscriptFailed) and parsed.item_id == failed["item_id"]
    _speak(client)
    assert client.wait("conversation.item.input_audio_transcription.completed")["transcript"] == "כן"
    assert len(client.of("conversation.item.input_audio_transcription.failed")) == 1
    for _, event in client.events:
        assert_ga_server_event(event)


def test_responses_that_fail_or_end_incomplete(make_fake_realtime, make_client):
    quota = {"type": "failed", "error": {"type": "insufficient_quota", "code": "insufficient_quota",
                                         "message": "You exceeded your current quota."}}
    fake, client = ready(make_fake_realtime, make_client, responses=[
        Reply("לא ייאמר", 800, status="failed", details=quota),
        Reply("אחת שתיים שלוש ארבע חמש שש", 1000, status="incomplete", stop_at_ms=400),
        Reply("נכשלה באמצע", 600, status="failed", stop_at_ms=200)])
    client.send(rp.response_create())
    failed = client.wait("response.done")["response"]
    assert (failed["status"], failed["output"], failed["status_details"]) == ("failed", [], quota)
    assert client.of("response.output_audio.delta") == [] and client.of("response.output_item.added") == []

    client.send(rp.response_create())
    incomplete = client.wait("response.done", 2)["response"]
    assert incomplete["status"] == "incomplete"
    assert incomplete["status_details"] == {"type": "incomplete", "reason": "max_output_tokens"}
    audio = b"".join(base64.b64decode(d["delta"]) for d in client.of("response.output_audio.delta"))
    assert len(audio) == 400 * 8
    said = client.of("response.output_audio_transcript.done")[0]["transcript"]
    assert said and "אחת שתיים שלוש ארבע חמש שש".startswith(said) and said != "אחת שתיים שלוש ארבע חמש שש"
    assert incomplete["output"][0]["status"] == "incomplete"
    assert incomplete["output"][0]["content"][0]["transcript"] == said

    client.send(rp.response_create())
    mid = client.wait("response.done", 3)["response"]
    assert mid["status"] == "failed" and mid["status_details"]["error"]["type"] == "server_error"
    assert fake.responses[2].audio_ms_sent == 200
    parsed = [rp.parse_server_event(json.dumps(e)) for e in client.of("response.done")]
    assert [(p.status, p.status_reason) for p in parsed] == [
        ("failed", "You exceeded your current quota."), ("incomplete", "max_output_tokens"),
        ("failed", mid["status_details"]["error"]["message"])]
    for _, event in client.events:
        assert_ga_server_event(event)


def test_an_error_may_come_mid_response_and_the_response_goes_on(make_fake_realtime, make_client):
    fake, client = ready(make_fake_realtime, make_client, responses=[
        Reply("בסדר", 300, error=ServerError(code="rate_limit_exceeded", message="Slow down.", type="tokens"))])
    client.send(rp.response_create())
    done = client.wait("response.done")
    types = client.types()
    assert types.index("response.created") < types.index("error") < types.index("response.done")
    error = client.of("error")[0]
    parsed = rp.parse_server_event(json.dumps(error))
    assert (parsed.code, parsed.fatal) == ("rate_limit_exceeded", False)
    assert done["response"]["status"] == "completed"
    for _, event in client.events:
        assert_ga_server_event(event)


def test_the_session_expires_at_a_given_time(make_fake_realtime, make_client):
    # No session.update: the timer runs from the connect, and a slow machine could reach it first.
    fake = make_fake_realtime(RealtimeScript(expire_after_s={1: 0.3}))
    client = make_client(fake)
    wait_for(lambda: client.reader.dead, 5, message="the fake to close")
    error = client.of("error")[-1]
    assert error["error"] == {"type": "invalid_request_error", "code": "session_expired",
                              "message": SESSION_EXPIRED.message, "param": None, "event_id": None}
    assert rp.parse_server_event(json.dumps(error)).fatal
    assert (client.close_code, client.close_reason) == (1001, SESSION_EXPIRED.message)
    conn = fake.connections[0]
    assert conn.expired_at - conn.opened_at >= 0.3
    fake.wait_for(lambda: conn.closed, message="the fake to see its connection closed")
    assert_ga_server_event(error)


def test_the_server_may_close_at_a_given_time_or_mid_response(make_fake_realtime, make_client):
    fake = make_fake_realtime(RealtimeScript(close_after_s={1: 0.2}))
    quiet = make_client(fake)
    wait_for(lambda: quiet.reader.dead, 5, message="the fake to close")
    assert quiet.close_code == 1011 and quiet.of("error") == []

    fake, talking = ready(make_fake_realtime, make_client, speed=1.0, default_reply=Reply("משפט ארוך", 2000),
                          faults={1: "expire"}, fault_at_response=0)
    talking.send(rp.response_create())
    wait_for(lambda: talking.reader.dead, 5, message="the fake to close")
    assert talking.of("error")[-1]["error"]["code"] == "session_expired" and talking.close_code == 1001
    assert len(talking.of("response.output_audio.delta")) == 1 and talking.of("response.done") == []


def test_vad_hears_speech_over_its_threshold_not_hiss_or_a_click(make_fake_realtime, make_client):
    fake, client = ready(make_fake_realtime, make_client)
    for payload in [HISS] * 50 + [SPEECH] + [SILENCE] * 15 + [SPEECH, HISS] * 10:  # hiss; a click; crackle
        client.send(rp.audio_append(payload))
    client.barrier()
    assert client.of("input_audio_buffer.speech_started") == []
    _speak(client, speech=MURMUR)  # quiet speech, over -40 dBFS
    started = client.wait("input_audio_buffer.speech_started")
    assert started["audio_start_ms"] == (50 + 1 + 15 + 20) * 20 - 300  # from its first voiced frame, padded
    client.wait("input_audio_buffer.speech_stopped")

    strict = rp.SessionConfig(instructions="x", voice="alloy", transcription_prompt="", vad_silence_ms=200,
                              vad_threshold=0.9)
    fake, picky = ready(make_fake_realtime, make_client)
    picky.send(rp.session_update(strict))
    picky.wait("session.updated", 2)
    _speak(picky, speech=MURMUR)
    picky.barrier()
    assert picky.of("input_audio_buffer.speech_started") == []  # too quiet for a high threshold
    _speak(picky)
    picky.wait("input_audio_buffer.speech_stopped")


def test_an_item_after_an_unknown_previous_item_is_refused(make_fake_realtime, make_client):
    fake, client = ready(make_fake_realtime, make_client)
    client.send(rp.system_message("הקשר"))
    first = client.wait("conversation.item.done")["item"]["id"]

    def item_after(previous: str) -> str:
        event = json.loads(rp.user_text_message("שלום"))
        event["previous_item_id"] = previous
        rp.validate_client_event(event)
        return json.dumps(event)

    client.send(item_after("item_nosuchitem"))
    error = client.wait("error")["error"]
    assert (error["code"], error["param"]) == ("invalid_value", "previous_item_id")
    assert "item_nosuchitem" in error["message"]
    assert len(fake.connections[0].items_created) == 1  # not added
    client.send(item_after(first))
    client.send(item_after("root"))
    client.wait("conversation.item.done", 3)
    assert [e["previous_item_id"] for e in client.of("conversation.item.added")[1:]] == [first, "root"]
    assert len(client.of("error")) == 1


def test_runs_as_its_own_process():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    root = Path(__file__).resolve().parents[1]
    process = subprocess.Popen([sys.executable, "-m", "tests.fakes.realtime_server", "--port", str(port),
                                "--audio-ms", "300", "--first-byte-ms", "50"], cwd=root,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        ws = wait_for(lambda: _try_connect(port), 15, interval=0.1, message="the fake process to listen")
        assert json.loads(ws.recv())["type"] == "session.created"
        ws.send(rp.session_update(CONFIG))
        assert json.loads(ws.recv())["type"] == "session.updated"
        ws.send(rp.response_create())
        audio = b""
        while (event := json.loads(ws.recv()))["type"] != "response.done":
            if event["type"] == "response.output_audio.delta":
                audio += base64.b64decode(event["delta"])
        assert len(audio) == 300 * 8
        ws.close()
    finally:
        process.terminate()
        process.wait(5)


def _try_connect(port: int):
    try:
        return websocket.create_connection(f"ws://127.0.0.1:{port}/v1/realtime?model=gpt-realtime", timeout=5)
    except OSError:
        return None
