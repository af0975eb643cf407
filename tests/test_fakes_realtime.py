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
from tests.fakes.realtime_server import FakeRealtime, RealtimeScript, Reply, ToolCall, agent_audio_byte
from tests.fakes.waiting import wait_for

SERVER_EVENT = pydantic.TypeAdapter(RealtimeServerEvent)
# The real API's session object carries these; the SDK's session request type does not define them.
SESSION_EXTRAS = {"object", "id", "expires_at"}
SPEECH = base64.b64encode(b"\x28\xa8" * 80).decode()
SILENCE = base64.b64encode(b"\xff" * 160).decode()
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
    fake.wait_for_event("session.update")
    gevent.sleep(0.2)
    assert client.of("session.updated") == []
    client.send(rp.session_update(CONFIG))
    client.wait("session.updated")
    assert len(client.of("session.updated")) == 1


def test_session_updated_never_and_delayed(make_fake_realtime, make_client):
    never = make_client(make_fake_realtime(RealtimeScript(session_updated="never")))
    slow_fake = make_fake_realtime(RealtimeScript(session_updated_delay_ms=300))
    slow = make_client(slow_fake)
    sent_at = time.monotonic()
    never.send(rp.session_update(CONFIG))
    slow.send(rp.session_update(CONFIG))
    slow.wait("session.updated")
    assert 0.28 <= slow.at("session.updated")[0] - sent_at < 0.6
    assert never.of("session.updated") == []


def test_refused_upgrade_is_an_http_500(make_fake_realtime):
    fake = make_fake_realtime(RealtimeScript(refuse_upgrade=True))
    with pytest.raises(websocket.WebSocketBadStatusException) as raised:
        websocket.create_connection(fake.url, header=["Authorization: Bearer sk-test"], timeout=5)
    assert raised.value.status_code == 500
    assert fake.refused[0]["Authorization"] == "Bearer sk-test"
    assert fake.connections == []


def test_server_vad_reports_speech_commits_and_transcribes(make_fake_realtime, make_client):
    fake, client = ready(make_fake_realtime, make_client, caller_transcripts=["אני רוצה לקבוע תור"])
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
    gevent.sleep(0.1)
    assert client.of("response.created") == []  # never a response of its own
    assert fake.connections[0].input_ms == 1300
    assert fake.invalid_events == []
    for _, event in client.events:
        assert_ga_server_event(event)


def test_silence_shorter_than_the_session_setting_does_not_end_speech(make_fake_realtime, make_client):
    fake, client = ready(make_fake_realtime, make_client)
    for payload in [SPEECH] * 5 + [SILENCE] * 9 + [SPEECH] * 5 + [SILENCE] * 5:  # 180 ms gap < 200 ms
        client.send(rp.audio_append(payload))
    fake.wait_for(lambda: fake.connections[0].input_ms == 480)
    gevent.sleep(0.05)
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
    assert 0.18 <= deltas[0] - created < 0.3
    assert 0.4 <= deltas[-1] - deltas[0] < 0.55  # 9 chunks of 100 ms at twice real time


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
    fake, client = ready(make_fake_realtime, make_client, speed=1.0, default_reply=Reply("משפט ארוך מאוד", 3000))
    client.send(rp.response_cancel())  # nothing active yet
    assert client.wait("error")["error"]["code"] == "response_cancel_not_active"
    client.send(rp.response_create())
    client.wait("response.output_audio.delta", 2)
    response_id = client.of("response.created")[0]["response"]["id"]
    client.send(rp.response_cancel(response_id))
    done = client.wait("response.done")
    gevent.sleep(0.3)

    assert done["response"]["status"] == "cancelled"
    assert done["response"]["status_details"]["reason"] == "client_cancelled"
    sent = fake.responses[0].audio_ms_sent
    assert 200 <= sent <= 400
    assert len(client.of("response.output_audio.delta")) == sent // 100  # nothing after the cancel
    assert client.types()[-1] == "response.done"
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
    wait_for(lambda: client.reader.dead, 2, message="the socket to drop")
    assert client.closed_without_frame and client.close_code is None
    assert 0.15 <= fake.connections[0].dropped_at - updated_at < 0.5
    fake.wait_for(lambda: fake.connections[0].closed, message="the fake to see its connection closed")


def test_drop_after_responses(make_fake_realtime, make_client):
    fake, client = ready(make_fake_realtime, make_client, drop_after_responses=1, default_reply=Reply("ביי", 200))
    client.send(rp.response_create())
    wait_for(lambda: client.reader.dead, 2, message="the socket to drop")
    assert client.closed_without_frame
    assert len(client.of("response.done")) == 1


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
