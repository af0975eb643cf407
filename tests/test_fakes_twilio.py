"""The fake Twilio caller on its own, against a small scripted media websocket.

Behaviour, not speed: where time matters, only what cannot depend on the machine's load is
asserted (a frame never leaves before its tick, a mark never echoes before its audio played).
"""
import base64
import itertools
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
from tests.fakes.twilio_caller import (FRAME_BYTES, ROUGH_LINE, SILENCE_FRAME, SPEECH_FRAME, Line, place_call,
                                      read_tag, tagged_frame, withhold_all)
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
    # Real-time pacing: frame k never arrives before k·20 ms after the start (however late it may be).
    times = [t for t, m in server.received if m["event"] == "media"]
    assert all(t >= call.started_at + k * 0.020 - 0.001 for k, t in enumerate(times))
    assert server.events("stop")[0]["stop"] == {"accountSid": call.account_sid, "callSid": "CA1"}
    wait_for(lambda: server.closed_at, 2, message="the server to see the close")
    assert call.close_code == 1000 and not call.closed_by_server
    assert call.protocol_errors == [] and call.greenlet_errors == []


def test_speak_sends_speech_frames_then_silence(media_server, make_twilio_call):
    server = media_server(wait_forever)
    call = make_twilio_call(server.url, "CA1", PARAMETERS)
    server.wait_event("media", 5)
    call.speak(200, wait=True)
    server.wait_event("media", call.frames_sent + 1)
    payloads = [base64.b64decode(m["media"]["payload"]) for m in server.events("media")]
    speech = [i for i, p in enumerate(payloads) if p == SPEECH_FRAME]
    assert len(speech) == 10 and speech == list(range(speech[0], speech[0] + 10))
    assert payloads[speech[-1] + 1] == SILENCE_FRAME
    assert [(s.ms, s.ended_at is not None) for s in call.speech_log] == [(200, True)]


def test_playout_is_real_time_and_marks_echo_when_reached(media_server, make_twilio_call):
    def script(server: MediaServer) -> None:
        server.media(500)  # all at once, as a server that does not pace
        server.mark("greeting")

    server = media_server(script)
    call = make_twilio_call(server.url, "CA1", PARAMETERS)
    echoed_at = call.wait_mark_echoed("greeting", 5)

    # Played out one frame per tick: 25 frames take 24 ticks at least after the first, however
    # fast they came.
    assert echoed_at - call.first_audio_received_at >= 0.480 - 0.021
    assert call.first_heard_at >= call.first_audio_received_at
    assert [ms for _, ms, _ in call.playout_log] == [20] * 25, "a full frame every tick, no gap"
    assert call.heard_ms == 500 and 0 < call.max_buffered_ms <= 500 and call.buffered_ms == 0
    echo = server.wait_event("mark")
    assert echo == {"event": "mark", "sequenceNumber": echo["sequenceNumber"], "streamSid": call.stream_sid,
                    "mark": {"name": "greeting"}}
    segment = call.segment_ending("greeting")
    assert (segment.start_mark, segment.received_ms, segment.heard_ms, segment.cleared_ms) == (None, 500, 500, 0)
    assert call.marks_reached[0][0] == pytest.approx(echoed_at, abs=0.5) and call.marks_withheld == []
    assert call.protocol_errors == []


def test_mark_with_nothing_to_play_echoes_at_once(media_server, make_twilio_call):
    server = media_server(lambda server: server.mark("idle"))
    call = make_twilio_call(server.url, "CA1", PARAMETERS)
    echoed_at = call.wait_mark_echoed("idle", 2)
    [(received_at, _)] = call.marks_received
    assert [name for _, name in call.marks_reached] == ["idle"]
    assert echoed_at - received_at < 0.5  # at once (a delayed line waits its delay: below)
    assert call.heard_ms == 0 and call.playout_log == []


def test_clear_drops_the_buffer_and_echoes_pending_marks(media_server, make_twilio_call):
    caller = {}

    def script(server: MediaServer) -> None:
        server.media(3000)
        server.mark("item-1")
        server.media(500)
        server.mark("item-2")
        wait_for(lambda: "call" in caller and caller["call"].heard_ms >= 200, 5, message="some of item 1 heard")
        server.send({"event": "clear"})

    server = media_server(script)
    call = caller["call"] = make_twilio_call(server.url, "CA1", PARAMETERS)
    clear = call.wait_clear(1, 5)
    server.wait_event("mark", 2)

    assert clear.marks_echoed == ["item-1", "item-2"]
    assert [n for _, n in call.marks_echoed] == ["item-1", "item-2"]
    assert clear.playing is call.segment_ending("item-1")
    assert 200 <= clear.playing_heard_ms < 3000
    assert clear.dropped_ms == pytest.approx(3500 - clear.playing_heard_ms, abs=1)
    assert call.buffered_ms == 0
    assert call.heard_ms == pytest.approx(clear.playing_heard_ms, abs=1)
    assert all(t <= clear.t for t, _, _ in call.playout_log), "nothing plays after the clear"
    item_1, item_2 = call.segment_ending("item-1"), call.segment_ending("item-2")
    assert item_1.cleared_ms == pytest.approx(3000 - item_1.heard_ms, abs=1)
    # Echoed by the clear, not by playout reaching it: none of item 2 was heard.
    assert (item_2.start_mark, item_2.heard_ms, item_2.cleared_ms) == ("item-1", 0, 500)


def test_a_gap_in_the_agents_audio_is_seen(media_server, make_twilio_call):
    caller = {}

    def script(server: MediaServer) -> None:
        server.media(200)
        wait_for(lambda: "call" in caller and caller["call"].heard_ms >= 200, 5, message="the first part heard")
        heard_at = caller["call"].last_heard_at
        gevent.sleep(max(0.0, heard_at + 0.3 - time.monotonic()))
        server.media(200)

    server = media_server(script)
    call = caller["call"] = make_twilio_call(server.url, "CA1", PARAMETERS)
    call.wait_heard(400, 5)
    # A tick late on a busy machine shows as a short gap too; the one in the audio is longer.
    [(_, gap)] = call.gaps(min_ms=200)
    assert gap >= 300 - 2 * 20  # the second part arrived 300 ms after the first was heard
    assert call.segments[0].received_ms == 400  # no mark between: one segment


# --- the line: jitter, clumps, late and missing echoes ----------------------------------


def _offsets(line: Line, n: int) -> list[float]:
    return list(itertools.islice(line.send_offsets(), n))


def test_an_ideal_line_sends_every_frame_on_its_tick():
    assert _offsets(Line(), 500) == [k * 0.020 for k in range(500)]


def test_a_jittery_line_sends_frames_late_but_in_order_and_never_early():
    line = Line(seed=7, jitter_ms=30)
    offsets = _offsets(line, 2000)
    assert offsets == sorted(offsets)
    assert all(k * 0.020 <= t <= k * 0.020 + 0.030 for k, t in enumerate(offsets))
    late = [t - k * 0.020 for k, t in enumerate(offsets)]
    assert max(late) > 0.020 and sum(late) / len(late) > 0.005, "jitter there is"
    assert _offsets(Line(seed=7, jitter_ms=30), 2000) == offsets, "the seed decides"
    assert _offsets(Line(seed=8, jitter_ms=30), 2000) != offsets


def test_a_bursty_line_holds_frames_back_and_sends_them_in_clumps():
    line = Line(seed=3, burst_chance=0.1, burst_frames=5)
    offsets = _offsets(line, 3000)
    clumps = [len(list(group)) for _, group in itertools.groupby(offsets)][:-1]  # the last may be cut short
    assert 5 in clumps and set(clumps) == {1, 5}
    assert clumps.count(5) == pytest.approx(3000 * 0.1 / (0.9 + 0.1 * 5), rel=0.3)  # a draw covers 1.4 frames on average
    assert all(k * 0.020 <= t <= k * 0.020 + line.max_lag_s + 1e-9 for k, t in enumerate(offsets))
    assert offsets == sorted(offsets)


def test_tagged_frames_carry_their_number_and_stay_what_they_were():
    for chunk in (1, 2, 255, 50 * 3600):
        silent, loud = tagged_frame(chunk, False), tagged_frame(chunk, True)
        assert len(silent) == len(loud) == FRAME_BYTES
        assert read_tag(silent) == (chunk, False) and read_tag(loud) == (chunk, True)
        assert set(silent) <= {0xFF, 0x7F}, "μ-law zero of either sign: still silence"
        assert not set(loud) & {0xFF, 0x7F}
    assert read_tag(SILENCE_FRAME) == (0, False) and read_tag(SPEECH_FRAME) == (0, True)
    assert read_tag(b"\x35" * FRAME_BYTES) is None and read_tag(b"\xff" * 80) is None


def test_a_rough_line_still_delivers_every_frame_in_order(media_server, make_twilio_call):
    server = media_server(wait_forever)
    call = make_twilio_call(server.url, "CA1", PARAMETERS, line=ROUGH_LINE, tagged=True)
    server.wait_event("media", 10)
    call.speak(400, wait=True)
    server.wait_event("media", 150, timeout=10)
    call.stop()
    media = server.events("media")
    assert [m["media"]["chunk"] for m in media] == [str(i + 1) for i in range(len(media))]
    assert [m["media"]["timestamp"] for m in media] == [str(i * 20) for i in range(len(media))]
    tags = [read_tag(base64.b64decode(m["media"]["payload"])) for m in media]
    assert [chunk for chunk, _ in tags] == list(range(1, len(media) + 1))
    assert sum(speech for _, speech in tags) == 20
    times = [t for t, m in server.received if m["event"] == "media"]
    assert all(t >= call.started_at + k * 0.020 - 0.001 for k, t in enumerate(times)), "never early"
    assert call.greenlet_errors == []


def test_a_delayed_line_echoes_marks_late_and_in_order(media_server, make_twilio_call):
    def script(server: MediaServer) -> None:
        server.mark("idle")
        for n in range(5):
            server.media(100)
            server.mark(f"m{n}")

    server = media_server(script)
    call = make_twilio_call(server.url, "CA1", PARAMETERS, line=Line(seed=5, mark_delay_ms=(300.0, 600.0)))
    call.wait_mark_echoed("m4", 5)
    names = ["idle"] + [f"m{n}" for n in range(5)]
    assert [n for _, n in call.marks_reached] == names
    assert [n for _, n in call.marks_echoed] == names
    # The caller's echo of m4 is sent; the server reads it on its own greenlet, a moment later.
    wait_for(lambda: len(server.events("mark")) == len(names), 5, message="the server to read every echo")
    assert [m["mark"]["name"] for m in server.events("mark")] == names
    reached, echoed = dict((n, t) for t, n in call.marks_reached), dict((n, t) for t, n in call.marks_echoed)
    assert all(echoed[n] - reached[n] >= 0.300 for n in names), "an echo waits out its delay"


def test_a_clear_echoes_delayed_marks_at_once_and_first(media_server, make_twilio_call):
    caller = {}

    def script(server: MediaServer) -> None:
        server.media(100)
        server.mark("a")
        server.media(3000)
        server.mark("b")
        wait_for(lambda: "call" in caller and caller["call"].marks_reached, 5, message="mark a reached")
        server.send({"event": "clear"})

    server = media_server(script)
    call = caller["call"] = make_twilio_call(server.url, "CA1", PARAMETERS,
                                             line=Line(mark_delay_ms=(10_000.0, 10_000.0)))
    clear = call.wait_clear(1, 5)
    server.wait_event("mark", 2)
    assert clear.marks_echoed == ["a", "b"]
    assert [m["mark"]["name"] for m in server.events("mark")] == ["a", "b"]
    [(reached_a, _)] = [r for r in call.marks_reached if r[1] == "a"]
    assert call.marks_echoed[0][0] - reached_a < 5.0, "not left to wait out its 10 s"


def test_a_withheld_mark_never_comes_back(media_server, make_twilio_call):
    def script(server: MediaServer) -> None:
        for name in ("a", "b", "c"):
            server.media(100)
            server.mark(name)

    server = media_server(script)
    call = make_twilio_call(server.url, "CA1", PARAMETERS, line=Line(withhold_marks=lambda name: name == "b"))
    call.wait_mark_echoed("c", 5)
    server.wait_event("mark", 2)
    # b was reached before c, and echoes leave in order: had it been echoed, it would be by now.
    assert [n for _, n in call.marks_reached] == ["a", "b", "c"]
    assert [n for _, n in call.marks_echoed] == ["a", "c"] and call.marks_withheld == ["b"]
    assert [m["mark"]["name"] for m in server.events("mark")] == ["a", "c"]


def test_a_withheld_mark_is_not_echoed_by_a_clear_either(media_server, make_twilio_call):
    def script(server: MediaServer) -> None:
        server.media(2000)
        server.mark("x")
        server.send({"event": "clear"})
        server.mark("after")  # nothing to play before it: at once, were it not withheld

    server = media_server(script)
    call = make_twilio_call(server.url, "CA1", PARAMETERS, line=Line(withhold_marks=withhold_all))
    clear = call.wait_clear(1, 5)
    wait_for(lambda: len(call.marks_received) == 2, 5, message="both marks")
    assert clear.marks_echoed == [] and clear.dropped_ms > 0
    assert call.marks_withheld == ["x", "after"] and call.marks_echoed == []


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
        server.media(5000)
        gevent.sleep(0.1)
        server.ws.close(1000, "bye")

    server = media_server(script)
    call = make_twilio_call(server.url, "CA1", PARAMETERS)
    assert call.wait_closed(5) == 1000
    assert call.closed_by_server and call.close_reason == "bye"
    assert call.unplayed_at_close_ms == pytest.approx(5000 - call.heard_ms, abs=1)  # what the caller never heard
    assert 0 < call.unplayed_at_close_ms < 5000
    wait_for(lambda: not call.sending, 2, message="the caller to stop sending")


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

