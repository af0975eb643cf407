"""Agent audio to the caller: the TX pacer and the playback clock.

The Realtime API delivers audio in bursts, faster than real time. `Playback` queues it
in whole 20 ms μ-law frames, and the TX greenlet (`run`) sends one frame per 20 ms, a few
frames ahead of the caller's playout to absorb jitter, with a `mark` after each agent item.

The playback clock answers "what has the caller heard?": Twilio plays frames in order
as they arrive, so when the stream starts from idle at `t0`, frame n of the stream is
heard at t0 + n·20 ms. Each echoed mark re-anchors the clock to the end of its item,
so Twilio-side delay never makes us claim more than was heard.

Barge-in may hold TX while it decides whether the caller's speech over the agent takes the
turn (`hold`): the frames Twilio holds play out and nothing follows them, so the caller has
heard exactly the frames sent; `resume` goes on with the next one, as after an underrun.

Time is read once per step and kept in whole microseconds, so how many frames leave at
once, and how much of an item was heard, never depend on where the clock stands (a float
difference of two large clock readings can fall either side of a frame boundary). The
clock and TX's sleep are injected: production passes `time.monotonic` and `gevent.sleep`,
a test a manual clock and its sleep, to drive time itself.
"""
from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Callable

import gevent
from gevent.event import Event

from services.twilio_protocol import FRAME_BYTES, FRAME_MS, MULAW_SILENCE, mark_message, media_message

FRAME_US = FRAME_MS * 1000
MARK_PREFIX = "item:"


@dataclass(slots=True)
class _Segment:
    """One agent item on the stream's frame timeline."""

    item_id: str
    response_id: str
    start: int | None = None  # stream frame index of its first frame, in the current stretch
    sent: int = 0  # frames put on the stream
    fully_heard: bool = False  # its mark came back, or the stream went idle after it
    audio_at: float | None = None  # when its first audio was read off the Realtime socket


@dataclass(frozen=True, slots=True)
class Heard:
    """What the caller heard of an agent item when playback was cut."""

    item_id: str
    response_id: str
    heard_ms: int
    sent_ms: int


class Playback:
    """Agent audio on its way to the caller. Lives as long as the call.

    Three greenlets touch it, always under `_lock`: the Realtime greenlet queues audio
    (`enqueue`, `end_item`), TX sends it (`run`), RX reports echoed marks (`on_mark`),
    and barge-in holds, resumes or clears it (`hold`, `resume`, `clear`). Frames leave through `_send_due` only: from TX, or
    from `enqueue` when audio comes for an idle stream; they are written after `_lock` is
    released. `frames_out`, `frames_dropped` and `lateness_ms` are read once the call is over.
    """

    def __init__(self, send: Callable[[list[str]], None], stream_sid: str, *,
                 lead_ms: int = 60, on_first_frame: Callable[[str, float, float | None], None] | None = None,
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = gevent.sleep):
        self._send = send
        self._stream_sid = stream_sid
        self._lead_us = lead_ms * 1000
        self._on_first_frame = on_first_frame
        self._clock = clock
        self._sleep = sleep
        # Guards every field below it.
        self._lock = threading.Lock()
        # Whole frames of one item as they came (one entry per delta: a bytes object per frame
        # would cost more than the audio), or None for the item's mark. `_head`: the bytes of the
        # first entry already sent.
        self._queue: deque[tuple[_Segment, bytes | None]] = deque()
        self._head = 0
        self._segments: dict[str, _Segment] = {}
        self._partial: dict[str, bytearray] = {}  # each item's tail shorter than a frame
        self._muted: set[str] = set()  # responses cancelled by barge-in: their late audio is dropped
        # The current stretch of audio: since t0 (µs) the caller hears one frame per 20 ms.
        self._timeline: deque[_Segment] = deque()  # segments on the stream, not yet fully heard
        self._t0: int | None = None
        self._frames_total = 0
        self.frames_out = 0
        self.frames_dropped: dict[str, int] = {}
        # TX's own pacing figure: frames by how late they left, 1 ms buckets, the last one open.
        self.lateness_ms = [0] * 64
        # The send schedule: frame n of the stretch is due to be heard at _s0 + n·20 ms (µs),
        # computed each time, never accumulated. Marks re-anchor _t0 (what was heard), never _s0.
        self._s0 = 0
        # While barge-in holds the agent (`hold`): when the caller hears the last frame sent (µs).
        self._held_until: int | None = None
        self._wakeup = Event()  # set by whoever queues audio or stops; TX waits on it; `_send_due` clears it
        self._stopped = Event()  # set once, by stop(), from any greenlet

    # --- Realtime side -------------------------------------------------------------

    def enqueue(self, response_id: str, item_id: str, audio: bytes, received_at: float | None = None) -> None:
        """Queue audio read off the Realtime socket at `received_at` (default: now).

        Audio for an idle stream leaves from here, at once: the API sends a response's audio
        in one burst, and waking TX would make its first frame wait for the loop to come round
        (behind every other call's ready sockets). TX paces the rest.
        """
        with self._lock:
            if response_id in self._muted:
                self._drop("cancelled_response", max(1, len(audio) // FRAME_BYTES))
                return
            segment = self._segments.get(item_id)
            if segment is None:
                segment = self._segments[item_id] = _Segment(item_id=item_id, response_id=response_id)
            buffer = self._partial.get(item_id)
            if buffer is None:
                buffer = self._partial[item_id] = bytearray()
            buffer += audio
            whole = len(buffer) - len(buffer) % FRAME_BYTES
            if whole == 0:
                return
            if segment.audio_at is None:
                segment.audio_at = received_at if received_at is not None else self._clock()
            idle = not self._queue
            with memoryview(buffer) as view:  # one copy, and no view left to hold the buffer's size
                self._queue.append((segment, bytes(view[:whole])))
            del buffer[:whole]
        if idle:
            self._send_due()
        self._wakeup.set()

    def end_item(self, response_id: str, item_id: str) -> None:
        """All audio of the item has arrived: pad its last frame and queue its mark."""
        with self._lock:
            rest = self._partial.pop(item_id, None)
            segment = self._segments.get(item_id)
            if response_id in self._muted or segment is None:
                return
            if rest:
                self._queue.append((segment, bytes(rest) + bytes([MULAW_SILENCE]) * (FRAME_BYTES - len(rest))))
            self._queue.append((segment, None))
        self._wakeup.set()

    def clear(self, mute: tuple[str, ...] = ()) -> Heard | None:
        """Barge-in: drop everything queued; say what the caller heard of the item playing.

        Audio still arriving for the responses in `mute` (the cancelled one) or for any
        response cut here is dropped.
        """
        with self._lock:
            self._muted.update(mute)
            self._muted.update(segment.response_id for segment, _ in self._queue)
            self._muted.update(segment.response_id for segment in self._timeline)
            now = self._now_us()
            playing = self._playing_segment(now)
            heard = None
            if playing is not None:
                heard = Heard(item_id=playing.item_id, response_id=playing.response_id,
                              heard_ms=self._heard_frames(playing, now) * FRAME_MS, sent_ms=playing.sent * FRAME_MS)
            dropped = sum(len(audio) for _, audio in self._queue if audio is not None) - self._head
            if dropped:
                self._drop("barge_in", dropped // FRAME_BYTES)
            self._queue.clear()
            self._head = 0
            self._partial.clear()
            for segment in self._segments.values():
                segment.start = None  # marks Twilio echoes after a clear mean nothing now
            self._timeline.clear()
            self._t0 = None
            self._frames_total = 0
            self._held_until = None
            return heard

    def hold(self) -> None:
        """Barge-in, until it decides: no frame leaves (marks of audio already sent still do), what
        Twilio holds plays out, audio goes on queueing. The caller stops hearing the agent at the
        last frame sent, and `resume` goes on from the next one."""
        with self._lock:
            if self._held_until is not None:
                return
            now = self._now_us()
            self._held_until = now if self._t0 is None else max(now, self._t0 + self._frames_total * FRAME_US)

    def resume(self) -> float | None:
        """The hold is over: frames leave again, from the first the caller has not had. Returns the
        silence (ms) the caller has heard since the held audio ran out, or None when no audio is
        queued to go on with."""
        with self._lock:
            held_until, self._held_until = self._held_until, None
            if held_until is None:
                return None
            queued = any(audio is not None for _, audio in self._queue)
            silence_ms = max(0, self._now_us() - held_until) / 1000
        self._wakeup.set()
        return silence_ms if queued else None

    # --- RX side -----------------------------------------------------------------------

    def on_mark(self, name: str) -> str | None:
        """Twilio echoed a mark: the caller has heard its item to the end. Returns the item."""
        if not name.startswith(MARK_PREFIX):
            return None
        with self._lock:
            segment = self._segments.get(name[len(MARK_PREFIX):])
            if segment is None or segment.start is None or self._t0 is None:
                return None
            # Re-anchor the clock: the item's last frame is what the caller hears now.
            self._t0 = self._now_us() - (segment.start + segment.sent) * FRAME_US
            while self._timeline:
                done = self._timeline.popleft()
                done.fully_heard = True
                if done is segment:
                    break
            return segment.item_id

    # --- questions ---------------------------------------------------------------------

    def is_playing(self) -> bool:
        """Agent audio is queued, or sent and not yet heard."""
        with self._lock:
            return self._playing_segment(self._now_us()) is not None

    def has_audio(self, item_id: str) -> bool:
        with self._lock:
            return item_id in self._segments

    def spoke(self, response_id: str) -> bool:
        """The response had audio for the caller."""
        with self._lock:
            return any(segment.response_id == response_id for segment in self._segments.values())

    def unheard_items(self, response_id: str) -> list[str]:
        """The response's items whose end the caller has not heard yet (their mark is still to come).

        A cut response has none: what was cleared will never be heard.
        """
        with self._lock:
            if response_id in self._muted:
                return []
            return [segment.item_id for segment in self._segments.values()
                    if segment.response_id == response_id and not segment.fully_heard]

    def playing_item(self) -> str | None:
        with self._lock:
            segment = self._playing_segment(self._now_us())
            return segment.item_id if segment is not None else None

    def heard_ms(self, item_id: str) -> int:
        with self._lock:
            segment = self._segments.get(item_id)
            return self._heard_frames(segment, self._now_us()) * FRAME_MS if segment is not None else 0

    def _now_us(self) -> int:
        return round(self._clock() * 1_000_000)

    def _heard_frames(self, segment: _Segment, now: int) -> int:
        if segment.fully_heard:
            return segment.sent
        if segment.start is None or self._t0 is None:
            return 0
        position = (now - self._t0) // FRAME_US
        return min(segment.sent, max(0, position - segment.start))

    def _playing_segment(self, now: int) -> _Segment | None:
        """The item the caller hears now (µs), or the next one queued; None when silent."""
        if self._t0 is not None:
            position = (now - self._t0) // FRAME_US
            for segment in self._timeline:
                if position < segment.start + segment.sent:
                    return segment
        return self._queue[0][0] if self._queue else None

    def _drop(self, reason: str, count: int) -> None:
        self.frames_dropped[reason] = self.frames_dropped.get(reason, 0) + count

    # --- TX greenlet ------------------------------------------------------------------

    def stop(self) -> None:
        self._stopped.set()
        self._wakeup.set()

    def run(self) -> None:
        """TX: send frames on a drift-free 20 ms schedule while there is audio."""
        while not self._stopped.is_set():
            wait_s = self._send_due()
            if wait_s is None:
                self._wakeup.wait()
            elif wait_s > 0:
                self._sleep(wait_s)

    def _send_due(self) -> float | None:
        """Send the frames due now: each is due `lead` before the caller plays it, and those due
        within the next frame go too, so frames leave in pairs (half the wake-ups and writes).

        Returns the seconds until the next frame is due, or None when nothing is queued. Frames
        are taken under the lock and written in the order taken: nothing yields between releasing
        the lock and `_send` taking the socket's lock, whose waiters are served in turn.
        """
        texts: list[str] = []
        media = 0
        started: list[tuple[str, float | None]] = []  # (item, when its first audio was read)
        with self._lock:
            now = self._now_us()
            while self._queue:
                segment, audio = self._queue[0]
                if audio is None:
                    self._queue.popleft()
                    texts.append(mark_message(self._stream_sid, MARK_PREFIX + segment.item_id))
                    continue
                if self._held_until is not None:
                    break
                fresh = self._stretch_over(now)
                # Frame n may leave `lead` before it is heard, and one frame earlier still (pairs).
                if not fresh and self._s0 + self._frames_total * FRAME_US - self._lead_us - FRAME_US > now:
                    break
                head = self._head
                frame = audio[head:head + FRAME_BYTES]
                if head + FRAME_BYTES < len(audio):
                    self._head = head + FRAME_BYTES
                else:
                    self._queue.popleft()
                    self._head = 0
                due = self._s0 + self._book(segment, now, fresh) * FRAME_US
                # A stretch's first frames are due before it began: they leave at once, on time.
                send_at = max(due - self._lead_us, self._t0)
                self._late(now - send_at)
                texts.append(media_message(self._stream_sid, frame))
                media += 1
                if segment.sent == 1:
                    # Its first frame. Forwarding counts only when it was due as its audio came (or
                    # starts a stretch): a wait behind audio still playing is pacing, not delay.
                    audio_at = segment.audio_at
                    audio_us = None if audio_at is None else round(audio_at * 1_000_000)
                    due_at_once = audio_us is not None and due - self._lead_us <= max(audio_us, self._t0)
                    started.append((segment.item_id, audio_at if due_at_once else None))
            self.frames_out += media
            if not self._queue or self._held_until is not None:
                self._wakeup.clear()
                wait_us = None
            else:
                wait_us = self._s0 + self._frames_total * FRAME_US - self._lead_us - now
        if texts:
            self._send(texts)
            if started and self._on_first_frame is not None:
                sent_at = self._clock()
                for item_id, audio_at in started:
                    self._on_first_frame(item_id, sent_at, None if audio_at is None else (sent_at - audio_at) * 1000)
            if wait_us is not None:
                wait_us -= self._now_us() - now
        return None if wait_us is None else wait_us / 1_000_000

    def _late(self, late_us: int) -> None:
        """Count how late a frame left against its schedule, in 1 ms buckets (early counts as 0)."""
        bucket = min(len(self.lateness_ms) - 1, late_us // 1000) if late_us > 0 else 0
        self.lateness_ms[bucket] += 1

    def _stretch_over(self, now: int) -> bool:
        """Idle, or the caller has heard all that was sent: the next frame starts a new stretch."""
        return self._t0 is None or now >= self._t0 + self._frames_total * FRAME_US

    def _book(self, segment: _Segment, now: int, fresh: bool) -> int:
        """Put one frame of `segment` on the stream timeline (starting a new stretch when
        `fresh`); return its index in the stretch's schedule. Called under the lock.
        """
        if fresh:
            for done in self._timeline:
                done.fully_heard = done is not segment
            self._timeline.clear()
            self._t0 = self._s0 = now
            self._frames_total = 0
            if segment.start is not None:
                segment.start = -segment.sent  # an item that resumes after an underrun
        if segment.start is None:
            segment.start = self._frames_total
        if not self._timeline or self._timeline[-1] is not segment:
            self._timeline.append(segment)
        segment.sent += 1
        self._frames_total += 1
        return self._frames_total - 1
