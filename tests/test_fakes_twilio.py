"""The fake Twilio caller on its own, against a small scripted media websocket."""
import base64
import json
import time
from typing import Callable

import gevent
import pytest
from flask import Flask
from flask_sock import Sock
from gevent.pywsgi import WSGIServer
from simple_websocket import ConnectionClosed

from tests.conftest import BUSINESS_NUMBER, CALLER_NUMBER
from tests.fakes.twilio_caller import SILENCE_FRAME, SPEECH_FRAME, place_call
from tests.fakes.waiting import wait_for

PARAMETERS = {"call_sid": "CA1", "business_id": "1", "direction": "inbound", "token": "t0k"}
AGENT_BYTE = b"\x35"


def agent_audio(ms: int) -> str:
    return base64.b64encode(AGENT_BYTE * (ms * 8)).decode()


class MediaServer:
    """A media websocket that runs `script(server)` once the caller's `start` arrived.

    A reader greenlet records what the caller sends; only the script writes.
    """

    def __init__(self, script: Callable[["MediaServer"], None]) -> None:
        self.script = script
        self.received: list[tuple[float, dict]] = []
        self.closed_at: float | None = None
        self.ws = None
        self.stream_sid = None
        app = Flask("media_server")

        @Sock(app).route("/ws/twilio-media")
        def media(ws):
            self.ws = ws
            reader = gevent.spawn(self._read, ws)
            start = self.wait_event("start")
            self.stream_sid = start["streamSid"]
            try:
                self.script(self)
                reader.join()
            except ConnectionClosed:
                pass
            finally:
                reader.kill()

        self.server = WSGIServer(("127.0.0.1", 0), app, log=None)
        self.server.start()

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.server.server_port}/ws/twilio-media"

    def _read(self, ws) -> None:
        try:
            while True:
                message = ws.receive()
                if message is not None:
                    self.received.append((time.monotonic(), json.loads(message)))
        except ConnectionClosed:
            self.closed_at = time.monotonic()

    def events(self, kind: str) -> list[dict]:
        return [m for _, m in self.received if m["event"] == kind]

    def wait_event(self, kind: str, count: int = 1, timeout: float = 5.0) -> dict:
        wait_for(lambda: len(self.events(kind)) >= count, timeout, message=f"{count}x {kind} from the caller")
        return self.events(kind)[count - 1]

    def send(self, message: dict) -> None:
        self.ws.send(json.dumps({"streamSid": self.stream_sid, **message}))

    def media(self, ms: int, chunk_ms: int = 100) -> None:
        for _ in range(ms // chunk_ms):
            self.send({"event": "media", "media": {"payload": agent_audio(chunk_ms)}})

    def mark(self, name: str) -> None:
        self.send({"event": "mark", "mark": {"name": name}})

    def stop(self) -> None:
        self.server.stop(timeout=1)


@pytest.fixture
def media_server():
    servers = []

    def start(script: Callable[[MediaServer], None]) -> MediaServer:
        server = MediaServer(script)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


def wait_forever(server: MediaServer) -> None:
    pass  # the handler then just reads until the caller hangs up


def test_connected_start_and_media_are_twilios(media_server, make_twilio_call):
    server = media_server(wait_forever)
    call = make_twilio_call(server.url, "CA1", PARAMETERS)
    server.wait_event("media", 25)
    gevent.sleep(0.5)
    call.stop()

    first, second = server.received[0][1], server.received[1][1]
    assert first == {"event": "connected", "protocol": "Call", "version": "1.0.0"}
    assert second == {"event": "start", "sequenceNumber": "1", "streamSid": call.stream_sid, "start": {
        "streamSid": call.stream_sid, "accountSid": call.account_sid, "callSid": "CA1", "tracks": ["inbound"],
        "customParameters": PARAMETERS, "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000,
                                                        "channels": 1}}}
    media = server.events("media")
    assert [m["media"]["chunk"] for m in media] == [str(i + 1) for i in range(len(media))]
    assert [m["media"]["timestamp"] for m in media] == [str(i * 20) for i in range(len(media))]
    assert {m["media"]["track"] for m in media} == {"inbound"}
    assert {base64.b64decode(m["media"]["payload"]) for m in media} == {SILENCE_FRAME}
    sequence = [int(m["sequenceNumber"]) for _, m in server.received[1:]]
    assert sequence == list(range(1, len(sequence) + 1))
    # 20 ms real-time pacing, drift-free: frame k leaves k*20 ms after the first
    times = [t for t, m in server.received if m["event"] == "media"]
    elapsed = times[-1] - times[0]
    assert abs(elapsed - (len(times) - 1) * 0.02) < 0.03
    assert server.events("stop")[0]["stop"] == {"accountSid": call.account_sid, "callSid": "CA1"}
    wait_for(lambda: server.closed_at, 2, message="the server to see the close")
    assert call.close_code == 1000 and not call.closed_by_server
    assert call.protocol_errors == [] and call.greenlet_errors == []


def test_speak_sends_speech_frames_then_silence(media_server, make_twilio_call):
    server = media_server(wait_forever)
    call = make_twilio_call(server.url, "CA1", PARAMETERS)
    server.wait_event("media", 5)
    call.speak(200, wait=True)
    gevent.sleep(0.1)
    payloads = [base64.b64decode(m["media"]["payload"]) for m in server.events("media")]
    speech = [i for i, p in enumerate(payloads) if p == SPEECH_FRAME]
    assert len(speech) == 10 and speech == list(range(speech[0], speech[0] + 10))
    assert payloads[speech[-1] + 1] == SILENCE_FRAME
    assert [(s.ms, s.ended_at is not None) for s in call.speech_log] == [(200, True)]
    assert 0.18 <= call.speech_log[0].ended_at - call.speech_log[0].started_at < 0.25


def test_playout_is_real_time_and_marks_echo_when_reached(media_server, make_twilio_call):
    def script(server: MediaServer) -> None:
        server.media(500)  # all at once, as a server that does not pace
        server.mark("greeting")

    server = media_server(script)
    call = make_twilio_call(server.url, "CA1", PARAMETERS)
    wait_for(lambda: call.first_audio_received_at, 2, message="agent audio")
    gevent.sleep(0.25)
    assert 200 <= call.heard_ms <= 300  # played out in real time, not as fast as it came
    assert call.buffered_ms == pytest.approx(500 - call.heard_ms, abs=1)
    echoed_at = call.wait_mark_echoed("greeting", 2)

    assert 0.48 <= echoed_at - call.first_audio_received_at < 0.56
    assert call.first_heard_at - call.first_audio_received_at < 0.025
    assert call.heard_ms == 500 and 460 <= call.max_buffered_ms <= 500
    echo = server.wait_event("mark")
    assert echo == {"event": "mark", "sequenceNumber": echo["sequenceNumber"], "streamSid": call.stream_sid,
                    "mark": {"name": "greeting"}}
    segment = call.segment_ending("greeting")
    assert (segment.start_mark, segment.received_ms, segment.heard_ms, segment.cleared_ms) == (None, 500, 500, 0)
    assert call.gaps() == []
    assert call.protocol_errors == []


def test_mark_with_nothing_to_play_echoes_at_once(media_server, make_twilio_call):
    sent = {}

    def script(server: MediaServer) -> None:
        sent["at"] = time.monotonic()
        server.mark("idle")

    server = media_server(script)
    call = make_twilio_call(server.url, "CA1", PARAMETERS)
    assert call.wait_mark_echoed("idle", 2) - sent["at"] < 0.02
    assert call.heard_ms == 0


def test_clear_drops_the_buffer_and_echoes_pending_marks(media_server, make_twilio_call):
    def script(server: MediaServer) -> None:
        server.media(1000)
        server.mark("item-1")
        server.media(500)
        server.mark("item-2")
        gevent.sleep(0.3)
        server.send({"event": "clear"})

    server = media_server(script)
    call = make_twilio_call(server.url, "CA1", PARAMETERS)
    clear = call.wait_clear(1, 3)
    server.wait_event("mark", 2)
    gevent.sleep(0.2)

    assert clear.marks_echoed == ["item-1", "item-2"]
    assert clear.playing is call.segment_ending("item-1")
    assert 260 <= clear.playing_heard_ms <= 340
    assert clear.dropped_ms == pytest.approx(1500 - clear.playing_heard_ms, abs=1)
    assert call.heard_ms == pytest.approx(clear.playing_heard_ms, abs=1)  # nothing plays after the clear
    item_1, item_2 = call.segment_ending("item-1"), call.segment_ending("item-2")
    assert item_1.cleared_ms == pytest.approx(1000 - item_1.heard_ms, abs=1)
    assert (item_2.start_mark, item_2.heard_ms, item_2.cleared_ms) == ("item-1", 0, 500)
    echo_times = [t for t, m in server.received if m["event"] == "mark"]
    assert echo_times[1] - echo_times[0] < 0.01  # all at once, as Twilio does
    assert [n for _, n in call.marks_echoed] == ["item-1", "item-2"]


def test_a_gap_in_the_agents_audio_is_seen(media_server, make_twilio_call):
    def script(server: MediaServer) -> None:
        server.media(200)
        gevent.sleep(0.5)
        server.media(200)

    server = media_server(script)
    call = make_twilio_call(server.url, "CA1", PARAMETERS)
    call.wait_heard(400, 3)
    [(_, gap)] = call.gaps()
    assert 260 <= gap <= 340
    assert call.segments[0].received_ms == 400  # no mark between: one segment


def test_what_twilio_would_not_accept_is_recorded(media_server, make_twilio_call):
    def script(server: MediaServer) -> None:
        server.ws.send(b"\x00\x01")
        server.ws.send("{not json")
        server.ws.send(json.dumps({"event": "media", "streamSid": "MZwrong", "media": {"payload": agent_audio(20)}}))
        server.send({"event": "play", "media": {}})
        server.send({"event": "media", "media": {}})
        server.send({"event": "mark", "mark": {}})
        server.media(100)  # and one that is fine

    server = media_server(script)
    call = make_twilio_call(server.url, "CA1", PARAMETERS)
    wait_for(lambda: call.media_received, 2, message="the valid media")
    assert len(call.protocol_errors) == 6
    assert call.received_ms == 100


def test_dtmf_and_raw_frames_reach_the_server(media_server, make_twilio_call):
    server = media_server(wait_forever)
    call = make_twilio_call(server.url, "CA1", PARAMETERS)
    call.dtmf("5")
    call.send_raw('{"event":"bogus","n":1}')
    dtmf = server.wait_event("dtmf")
    assert dtmf["dtmf"] == {"track": "inbound_track", "digit": "5"} and dtmf["streamSid"] == call.stream_sid
    assert server.wait_event("bogus") == {"event": "bogus", "n": 1}


def test_server_close_is_recorded(media_server, make_twilio_call):
    def script(server: MediaServer) -> None:
        server.media(500)
        gevent.sleep(0.1)
        server.ws.close(1000, "bye")

    server = media_server(script)
    call = make_twilio_call(server.url, "CA1", PARAMETERS)
    assert call.wait_closed(2) == 1000
    assert call.closed_by_server and call.close_reason == "bye"
    assert 300 <= call.unplayed_at_close_ms <= 450  # what the caller never heard
    frames = call.frames_sent
    gevent.sleep(0.1)
    assert call.frames_sent == frames  # the caller stops sending


def test_close_abruptly_gives_the_server_no_stop(media_server, make_twilio_call):
    server = media_server(wait_forever)
    call = make_twilio_call(server.url, "CA1", PARAMETERS)
    server.wait_event("media", 3)
    call.close_abruptly()
    wait_for(lambda: server.closed_at, 2, message="the server to notice")
    assert server.events("stop") == []
    assert call.close_code is None


def test_place_call_reads_the_twiml(live_server, business_id):
    placed = place_call(live_server.base_url, "CA" + "1" * 32, CALLER_NUMBER, BUSINESS_NUMBER)
    assert placed.status_code == 200
    assert placed.stream_url.endswith("/ws/twilio-media")
    assert placed.action_url.endswith("/webhook/stream_ended")
    assert placed.parameters["call_sid"] == "CA" + "1" * 32
    assert placed.parameters["business_id"] == str(business_id)
    assert {"direction", "from", "to", "token"} <= set(placed.parameters)

    unknown = place_call(live_server.base_url, "CA" + "2" * 32, CALLER_NUMBER, "+972300009999")
    assert unknown.stream_url is None and unknown.hangup and unknown.says

