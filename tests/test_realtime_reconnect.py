"""A Realtime session lost mid-call is opened again; the caller hears a short break, not the end.

The fake Realtime API drops the TCP connection, or goes silent without closing, part-way
through a response; the server reconnects, sends the same session, replays what was said, and
the call goes on. A second loss hands the call to a person, or ends it with an apology.
A loss during an ending's goodbye asks for the goodbye again (or, when it has all arrived, lets
it play out), and the caller's audio sent across a reset reaches the new session in order. A
relay (`RealtimeRelay`) makes the cuts the fake cannot: a reset at a chosen frame, a clean close
right after a given response.
"""
import base64
import dataclasses
import socket
import struct
import time
import xml.etree.ElementTree as ET
from typing import Callable

import gevent
import pytest
from gevent.server import StreamServer

from bench.realtime_peer import PATH
from prompts.tools import call_event
from services.shutdown import Shutdown
from tests.fakes.realtime_server import RealtimeScript, Reply
from tests.fakes.twilio_caller import FakeTwilioCall
from tests.fakes.waiting import wait_for
from tests.harness import TEST_TIMING

GREETING = Reply("שלום, הגעתם למספרת הבדיקה", 1000)
ANSWER = Reply("אנחנו פתוחים מתשע בבוקר עד שש בערב, בכל ימות השבוע", 3000)
ASKED = "מה השעות שלכם?"
HUMAN = "+97235550000"
# Deadlines shortened so that a silent socket shows within a second.
QUICK = dataclasses.replace(TEST_TIMING, realtime_ping_after_s=0.3, realtime_pong_timeout_s=0.3,
                            response_stall_s=1.0)


def _item_texts(conn) -> list[tuple[str, str]]:
    return [(item["role"], item["content"][0]["text"]) for item in conn.items_created if item.get("type") == "message"]


def _greet_then_ask(h):
    caller = h.call()
    caller.wait_heard(GREETING.audio_ms, timeout=15)  # a loaded CI machine can take seconds to set a call up
    caller.wait_quiet(150)
    caller.speak(600)
    return caller


def test_a_drop_mid_response_is_survived_and_the_new_session_knows_the_conversation(make_harness):
    # The drop is a reset, which discards what the server had not yet read: the answer's first audio
    # (and so the drop) comes half a second after the caller's transcript, for a loaded machine to
    # have read it.
    # Liveness pings as deployed, not QUICK's 0.3 s: the new session's quiet while the caller
    # listens is no fault here, and a loaded machine can be slower than that to pong.
    h = make_harness(RealtimeScript(responses=[GREETING, ANSWER], faults={1: "drop"}, caller_transcripts=[ASKED],
                                    first_byte_ms=500),
                     timing=dataclasses.replace(QUICK, realtime_ping_after_s=5.0, realtime_pong_timeout_s=3.0))
    caller = _greet_then_ask(h)
    second = h.fake.wait_for_connection(2, timeout=5)
    first = h.fake.connections[0]
    second.wait_for_client_event("response.create", timeout=5)
    # The same session as before, then the conversation so far, then one apology.
    assert second.client_events("session.update")[0]["session"] == first.client_events("session.update")[0]["session"]
    said = _item_texts(second)
    assert said[:2] == [("assistant", GREETING.text), ("user", ASKED)]
    assert said[-1] == ("system", call_event("Reconnected"))
    assert len(second.client_events("response.create")) == 1
    heard_before = caller.heard_ms
    caller.wait_heard(heard_before + 500, timeout=5)  # the apology (the fake's default reply)
    caller.wait_quiet(150)
    caller.speak(600)  # and the caller's next turn is answered on the new session
    second.wait_for_client_event("response.create", count=2, timeout=5)
    caller.wait_heard(caller.heard_ms + 500, timeout=5)
    caller.stop()
    stored = h.wait_ended(caller.call_sid)
    assert stored.row.end_reason == "caller_hangup"
    assert stored.row.metrics["realtime_reconnects"] == 1
    assert 0 < stored.row.metrics["reconnect_gap_ms"][0] < 1500
    # Both of the caller's turns are stored (the fake's transcripts start again on each connection).
    assert [text for speaker, text, _ in stored.turns if speaker == "caller"] == [ASKED, ASKED]
    assert h.fake.invalid_events == []


def test_a_socket_that_goes_silent_without_closing_is_reconnected_after_its_deadline(make_harness):
    h = make_harness(RealtimeScript(responses=[GREETING, ANSWER], faults={1: "freeze"}, caller_transcripts=[ASKED]),
                     timing=QUICK)
    caller = _greet_then_ask(h)
    frozen = h.fake.connections[0]
    second = h.fake.wait_for_connection(2, timeout=5)
    assert frozen.frozen_at is not None
    # No frame for ping_after, then no pong for pong_timeout: about 0.6 s, well under 2 s.
    assert second.opened_at - frozen.frozen_at < 2.0
    second.wait_for_client_event("response.create", timeout=5)  # the apology, after the replay
    assert _item_texts(second)[:2] == [("assistant", GREETING.text), ("user", ASKED)]
    caller.wait_heard(caller.heard_ms + 500, timeout=5)
    caller.stop()
    assert h.wait_ended(caller.call_sid).row.metrics["realtime_reconnects"] == 1


def test_a_second_loss_hands_the_call_to_the_businesss_person(make_harness):
    h = make_harness(RealtimeScript(responses=[GREETING, ANSWER], faults={1: "drop", 2: "drop"},
                                    caller_transcripts=[ASKED]),
                     timing=QUICK, business={"transfer_number": HUMAN})
    caller = _greet_then_ask(h)
    second = h.fake.wait_for_connection(2, timeout=5)
    second.wait_for_client_event("response.create", timeout=5)  # the apology (response 0 of connection 2)
    caller.wait_heard(caller.heard_ms + 500, timeout=5)
    caller.wait_quiet(150)
    caller.speak(600)  # response 1 of connection 2 drops too
    caller.wait_closed(timeout=5)
    stored = h.wait_ended(caller.call_sid)
    assert stored.row.end_reason == "realtime_dropped" and stored.row.transfer_to == HUMAN
    after = h.stream_ended(caller.call_sid)
    root = ET.fromstring(after.twiml)
    assert root.find("Say") is not None and root.find("Dial").find("Number").text == HUMAN
    assert len(h.fake.connections) == 2


def test_a_second_loss_without_a_person_ends_with_an_apology(make_harness):
    h = make_harness(RealtimeScript(responses=[GREETING, ANSWER], faults={1: "drop", 2: "drop"},
                                    caller_transcripts=[ASKED]), timing=QUICK)
    caller = _greet_then_ask(h)
    h.fake.wait_for_connection(2, timeout=5).wait_for_client_event("response.create", timeout=5)
    caller.wait_heard(caller.heard_ms + 500, timeout=5)
    caller.wait_quiet(150)
    caller.speak(600)
    caller.wait_closed(timeout=5)
    assert h.wait_ended(caller.call_sid).row.end_reason == "realtime_dropped"
    after = h.stream_ended(caller.call_sid)
    assert after.hangup and any(say.strip() for say in after.says)


def test_a_response_that_stalls_is_cancelled_and_the_call_goes_on(make_harness):
    h = make_harness(RealtimeScript(responses=[GREETING, ANSWER], faults={1: "stall"}, caller_transcripts=[ASKED]),
                     timing=QUICK)
    caller = _greet_then_ask(h)
    conn = h.fake.connections[0]
    conn.wait_for_client_event("response.cancel", timeout=5)
    stalled = conn.responses[1]
    assert stalled.status == "cancelled" and stalled.audio_ms_sent == 0
    assert conn.client_event_records("response.cancel")[0].t - stalled.created_at >= QUICK.response_stall_s - 0.1
    caller.wait_quiet(150)
    caller.speak(600)  # the gate is free again: the next turn is answered
    conn.wait_for_client_event("response.create", count=3, timeout=5)
    caller.wait_heard(GREETING.audio_ms + 500, timeout=5)
    caller.stop()
    stored = h.wait_ended(caller.call_sid)
    assert stored.row.metrics["response_stalls"] == 1 and stored.row.metrics["realtime_reconnects"] == 0
    assert len(h.fake.connections) == 1


# --- a relay for cuts the fake cannot make ---------------------------------------------


@dataclasses.dataclass
class _Link:
    downstream: socket.socket  # the server's Realtime client
    upstream: socket.socket  # the fake
    cut_at: float | None = None  # when the server's side was closed or reset


class RealtimeRelay:
    """A TCP relay between the server and the fake Realtime API. `reset(n)` resets link n (the
    server's next write fails, as when a network path dies); `close_after_done=k` closes the first
    link, with a FIN after everything before it, once the fake has sent its k-th response.done."""

    _DONE = b'{"type":"response.done"'

    def __init__(self, close_after_done: int | None = None):
        self.upstream_port: int | None = None
        self.close_after_done = close_after_done
        self.links: list[_Link] = []
        self._server = StreamServer(("127.0.0.1", 0), self._serve)

    def start(self) -> "RealtimeRelay":
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop(timeout=1)

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self._server.server_port}{PATH}"

    def reset(self, n: int = 0) -> None:
        link = self.links[n]
        link.cut_at = time.monotonic()
        link.downstream.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        link.downstream.close()
        link.upstream.close()

    def _serve(self, downstream: socket.socket, _address) -> None:
        link = _Link(downstream, socket.create_connection(("127.0.0.1", self.upstream_port)))
        self.links.append(link)
        watch_done = len(self.links) == 1 and self.close_after_done is not None
        gevent.joinall([gevent.spawn(self._up, link), gevent.spawn(self._down, link, watch_done)])
        link.upstream.close()

    def _up(self, link: _Link) -> None:
        """Server to fake; after a cut, what the server still sends is read and dropped."""
        try:
            while data := link.downstream.recv(65536):
                if link.cut_at is None:
                    link.upstream.sendall(data)
        except OSError:
            pass

    def _down(self, link: _Link, watch_done: bool) -> None:
        done, tail = 0, b""
        try:
            while link.cut_at is None and (data := link.upstream.recv(65536)):
                link.downstream.sendall(data)
                if watch_done:
                    seen = tail + data
                    done += seen.count(self._DONE) - tail.count(self._DONE)
                    tail = seen[-len(self._DONE):]
                    if done >= self.close_after_done:
                        link.cut_at = time.monotonic()
                        link.downstream.shutdown(socket.SHUT_WR)  # the server reads all, then the end
                        link.upstream.close()
        except OSError:
            pass


@pytest.fixture
def relay():
    relay = RealtimeRelay().start()
    yield relay
    relay.stop()


# --- a cut during the ending's goodbye -------------------------------------------------

GOODBYE = Reply("אני חייבת לסיים עכשיו, יחזרו אליכם. להתראות", 1200)


def _shutdown(h) -> Shutdown:
    return Shutdown(h.live.app.extensions["live_calls"], h.live.settings, None, None)


def _heard_in_full(caller, reply: Reply) -> None:
    last = max(caller.segments, key=lambda s: s.index)
    assert last.received_ms == reply.audio_ms and last.heard_ms == reply.audio_ms, "the goodbye was cut"
    assert caller.unplayed_at_close_ms == 0


def test_a_drop_during_the_shutdown_goodbye_asks_for_it_again_on_the_new_session(make_harness):
    h = make_harness(RealtimeScript(responses=[GREETING], faults={1: "drop"}), timing=QUICK, shutdown_drain_s=0.0)
    caller = h.call()
    caller.wait_heard(GREETING.audio_ms, timeout=5)
    caller.wait_quiet(150)
    # From here on each connection's next response is the goodbye: the first one's drops after its
    # first audio (its response 1), the second one's is its response 0.
    h.fake.script.responses = [GOODBYE, GOODBYE]
    started = time.monotonic()
    _shutdown(h).begin()
    second = h.fake.wait_for_connection(2, timeout=5)
    # Closed once the goodbye was heard, not at its deadline.
    assert caller.wait_closed(timeout=QUICK.goodbye_timeout_s - 5) == 1000
    assert caller.closed_at - started < QUICK.goodbye_timeout_s
    first = h.fake.connections[0]
    assert first.responses[1].audio_ms_sent < GOODBYE.audio_ms
    # The new session is told the conversation and why the call is closing; its one response is
    # the goodbye, heard to its end, and then the line closes.
    notice = call_event("Shutdown")
    assert _item_texts(second)[0] == ("assistant", GREETING.text)
    assert _item_texts(second)[-1] == ("system", notice)
    assert notice not in [text for _, text in _item_texts(second)[:-1]]
    assert len(second.client_events("response.create")) == 1
    assert second.responses[0].status == "completed"
    _heard_in_full(caller, GOODBYE)
    stored = h.wait_ended(caller.call_sid)
    assert stored.row.end_reason == "shutdown" and stored.row.metrics["realtime_reconnects"] == 1
    agent = [(text, cut) for speaker, text, cut in stored.turns if speaker == "agent"]
    assert agent[0] == (GREETING.text, False) and agent[-1] == (GOODBYE.text, False)
    assert h.fake.invalid_events == [] and h.fake.double_responses == []


def test_a_cut_after_the_goodbye_has_all_arrived_lets_it_play_out_and_the_call_end(make_harness, relay):
    timing = dataclasses.replace(QUICK, max_call_s=1.5)
    relay.close_after_done = 2  # the line closes right after the goodbye's response.done
    h = make_harness(RealtimeScript(responses=[GREETING, GOODBYE]), realtime_url=relay.url, timing=timing)
    relay.upstream_port = h.fake.port
    caller = h.call()
    # The time limit: the goodbye's audio and its response.done arrive at once, then the line closes
    # while the caller is still hearing it. The call closes once it was heard, not at its deadline.
    assert caller.wait_closed(timeout=timing.goodbye_timeout_s - 5) == 1000
    assert relay.links[0].cut_at is not None and caller.segments[-1].last_heard_at > relay.links[0].cut_at
    _heard_in_full(caller, GOODBYE)
    assert len(h.fake.connections) == 1, "no new session for a call that only has to finish its goodbye"
    stored = h.wait_ended(caller.call_sid)
    assert stored.row.end_reason == "max_duration" and stored.row.metrics["realtime_reconnects"] == 0
    assert [(s, t, c) for s, t, c in stored.turns if s == "agent"][-1] == ("agent", GOODBYE.text, False)


def test_a_shutdown_while_the_session_is_being_opened_asks_for_the_goodbye_once_it_is_ready(make_harness):
    # The greeting went right behind the update, before the shutdown began. As after a reconnect,
    # nothing more is sent to a session not yet confirmed; then the shutdown's notice and its
    # goodbye, which waits for the greeting and is heard in full. The greeting is not asked again.
    h = make_harness(RealtimeScript(responses=[GREETING, GOODBYE], session_updated_delay_ms=600), timing=QUICK,
                     shutdown_drain_s=0.0)
    caller = h.call()
    conn = h.fake.wait_for_connection(1, timeout=5)
    conn.wait_for_client_event("response.create", timeout=5)
    assert conn.session_updated_sent == 0
    _shutdown(h).begin()
    assert caller.wait_closed(timeout=QUICK.goodbye_timeout_s - 5) == 1000
    notice = call_event("Shutdown")
    sent = [e.type for e in conn.client_event_records() if e.type not in ("input_audio_buffer.append", "session.update")]
    assert sent == ["response.create", "conversation.item.create", "response.create"]
    assert _item_texts(conn) == [("system", notice)]
    confirmed_at = next(t for t, event in conn.server_events if event["type"] == "session.updated")
    assert conn.client_event_records("response.create")[0].t < confirmed_at
    assert conn.client_event_records("conversation.item.create")[0].t >= confirmed_at
    _heard_in_full(caller, GOODBYE)
    assert h.wait_ended(caller.call_sid).row.end_reason == "shutdown"


# --- the caller's audio across a cut ---------------------------------------------------


def _stamped(number: int, frame: bytes) -> bytes:
    """The frame with its number in its first 32 bytes, as μ-law zeros of either sign: silence stays
    silence to the fake's VAD, speech stays speech."""
    return bytes(0x7F if number >> (31 - i) & 1 else 0xFF for i in range(32)) + frame[32:]


def _frame_numbers(conn) -> list[int]:
    numbers = []
    for event in conn.client_events("input_audio_buffer.append"):
        number = 0
        for byte in base64.b64decode(event["audio"])[:32]:
            number = number << 1 | (byte == 0x7F)
        numbers.append(number)
    return numbers


class NumberedCaller(FakeTwilioCall):
    """A caller whose frames carry their numbers; `before_frame[n]` runs just before frame n goes."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.before_frame: dict[int, Callable[[], None]] = {}

    def _send_json(self, message: dict, sequenced: bool = True) -> bool:
        if message["event"] == "media":
            media = message["media"]
            number = int(media["chunk"])
            media["payload"] = base64.b64encode(_stamped(number, base64.b64decode(media["payload"]))).decode()
            hook = self.before_frame.pop(number, None)
            if hook is not None:
                hook()
        return super()._send_json(message, sequenced)


def test_caller_audio_sent_across_a_reset_reaches_the_new_session_in_order(make_harness, relay):
    h = make_harness(RealtimeScript(responses=[GREETING]), realtime_url=relay.url, timing=QUICK)
    relay.upstream_port = h.fake.port
    call_sid, placed = h.place()
    caller = NumberedCaller(h.live.media_url, call_sid, placed.parameters).start()
    h.callers.append(caller)
    caller.wait_heard(GREETING.audio_ms, timeout=5)
    caller.wait_quiet(150)
    caller.speak(3000)  # the caller talks on across the cut
    cut_frame = caller.frames_sent + 20
    first = h.fake.connections[0]

    def cut() -> None:
        # Once the fake has every frame before it, the line resets, just before this frame goes:
        # from this frame on, every one is the new session's.
        wait_for(lambda: _frame_numbers(first)[-1:] == [cut_frame - 1], 5, message="the frames before the cut")
        relay.reset(0)

    caller.before_frame[cut_frame] = cut
    second = h.fake.wait_for_connection(2, timeout=5)
    wait_for(lambda: len(_frame_numbers(second)) >= 50, 5, message="a second of audio on the new session")
    caller.stop()
    stored = h.wait_ended(caller.call_sid)
    before, after = _frame_numbers(first), _frame_numbers(second)
    assert before == list(range(1, cut_frame))
    # Nothing lost, nothing twice, in the order spoken: the new session goes on from the cut frame.
    assert after[0] == cut_frame and after == list(range(cut_frame, cut_frame + len(after)))
    assert "realtime_closed" not in stored.row.metrics["frames_dropped"]
    assert stored.row.metrics["realtime_reconnects"] == 1
