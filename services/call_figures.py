"""A call's measured figures: latencies, frame counts, token usage and cost."""
from __future__ import annotations

import threading
from dataclasses import dataclass, field

from services import metrics
from services.pricing import estimate_cost_usd
from services.realtime_protocol import Usage


@dataclass
class CallFigures:
    """Owners: `frames_in` and `rx_dropped` are written by RX only, `usage` and `responses` by
    the Realtime greenlet only; the fields under `_lock` are written from several greenlets.
    `summary` reads everything once the call's greenlets are done."""

    stream_started_at: float
    greeting_ms: float | None = None
    response_ms: list[float] = field(default_factory=list)
    barge_in_ms: list[float] = field(default_factory=list)
    forwarding_ms: list[float] = field(default_factory=list)
    item_latency_ms: dict[str, float] = field(default_factory=dict)
    frames_in: int = 0
    rx_dropped: dict[str, int] = field(default_factory=dict)
    usage: Usage = field(default_factory=Usage)
    responses: int = 0
    barge_in_holds: int = 0
    barge_in_resumes: int = 0
    barge_in_cuts: int = 0
    resume_silence_ms: list[float] = field(default_factory=list)
    reconnect_gaps_ms: list[float] = field(default_factory=list)  # the Realtime greenlet's
    response_stalls: int = 0  # the liveness watch's

    def __post_init__(self) -> None:
        # Guards: _speech_stopped_at, greeting_ms, response_ms, barge_in_ms, forwarding_ms,
        # item_latency_ms and the barge_in_* counts and resume_silence_ms. Written by the Realtime
        # greenlet (speech stopped), Playback's first frames (TX or the Realtime greenlet) and
        # barge-in (the Realtime greenlet or its timers).
        self._lock = threading.Lock()
        self._speech_stopped_at: float | None = None

    def drop_rx(self, reason: str) -> int:
        count = self.rx_dropped.get(reason, 0) + 1
        self.rx_dropped[reason] = count
        return count

    def speech_stopped(self, at: float) -> None:
        with self._lock:
            self._speech_stopped_at = at

    def agent_audio_started(self, item_id: str, at: float, forwarding_ms: float | None = None, *,
                            greeting: bool = False) -> None:
        """Playback sent the first frame of an agent item (the greeting's, if `greeting`);
        `forwarding_ms` since its first audio was read, when that frame was due at once
        (otherwise the wait was pacing, not delay)."""
        with self._lock:
            if forwarding_ms is not None:
                self.forwarding_ms.append(forwarding_ms)
                metrics.FORWARDING_LATENCY.observe(forwarding_ms / 1000)
            if greeting:
                self.greeting_ms = (at - self.stream_started_at) * 1000
                self.item_latency_ms[item_id] = self.greeting_ms
                metrics.GREETING_LATENCY.observe(self.greeting_ms / 1000)
            elif self._speech_stopped_at is not None:
                latency = (at - self._speech_stopped_at) * 1000
                self._speech_stopped_at = None
                self.response_ms.append(latency)
                self.item_latency_ms[item_id] = latency
                metrics.RESPONSE_LATENCY.observe(latency / 1000)

    def response_item_latency(self, item_id: str) -> float | None:
        with self._lock:
            return self.item_latency_ms.get(item_id)

    def barge_in(self, latency_ms: float) -> None:
        """The agent fell silent for the caller's speech (cut, or held) this long after it began."""
        with self._lock:
            self.barge_in_ms.append(latency_ms)
        metrics.BARGE_IN_LATENCY.observe(latency_ms / 1000)

    def barge_in_held(self) -> None:
        with self._lock:
            self.barge_in_holds += 1
        metrics.BARGE_INS.labels("held").inc()

    def barge_in_cut(self) -> None:
        with self._lock:
            self.barge_in_cuts += 1
        metrics.BARGE_INS.labels("cut").inc()

    def barge_in_resumed(self, silence_ms: float | None) -> None:
        """The held agent went on; `silence_ms`: what the caller heard of the hold (None: it had
        nothing left to say)."""
        with self._lock:
            self.barge_in_resumes += 1
            if silence_ms is not None:
                self.resume_silence_ms.append(silence_ms)
        metrics.BARGE_INS.labels("resumed").inc()
        if silence_ms is not None:
            metrics.RESUME_SILENCE.observe(silence_ms / 1000)

    def add_usage(self, usage: Usage) -> None:
        self.responses += 1
        u = self.usage
        self.usage = Usage(u.input_text + usage.input_text, u.input_audio + usage.input_audio,
                           u.input_cached + usage.input_cached, u.output_text + usage.output_text,
                           u.output_audio + usage.output_audio)

    def summary(self, frames_out: int, tx_dropped: dict[str, int], tx_lateness_ms: list[int],
                model: str) -> tuple[dict, dict, float]:
        """(metrics JSON, usage JSON, cost) for the call row; also feeds the process counters."""
        dropped = dict(self.rx_dropped)
        for reason, count in tx_dropped.items():
            dropped[reason] = dropped.get(reason, 0) + count
        with self._lock:
            figures = {
                "greeting_latency_ms": _round(self.greeting_ms),
                "response_latency_ms": [_round(v) for v in self.response_ms],
                "barge_in_latency_ms": [_round(v) for v in self.barge_in_ms],
                "barge_in_holds": self.barge_in_holds,
                "barge_in_resumes": self.barge_in_resumes,
                "barge_in_cuts": self.barge_in_cuts,
                "resume_silence_ms": [_round(v) for v in self.resume_silence_ms],
                "forwarding_ms": [round(v, 2) for v in self.forwarding_ms],
                "realtime_reconnects": len(self.reconnect_gaps_ms),
                "reconnect_gap_ms": [_round(v) for v in self.reconnect_gaps_ms],
                "response_stalls": self.response_stalls,
                "frames_in": self.frames_in,
                "frames_out": frames_out,
                "frames_dropped": dropped,
                # How late TX sent frames against its schedule: {ms: frames}, and percentiles.
                "tx_lateness_ms": {str(ms): n for ms, n in enumerate(tx_lateness_ms) if n},
                "tx_lateness_p50_ms": histogram_percentile(tx_lateness_ms, 50),
                "tx_lateness_p99_ms": histogram_percentile(tx_lateness_ms, 99),
            }
        u = self.usage
        usage = {"responses": self.responses, "input_text_tokens": u.input_text, "input_audio_tokens": u.input_audio,
                 "input_cached_tokens": u.input_cached, "output_text_tokens": u.output_text,
                 "output_audio_tokens": u.output_audio, "total_tokens": u.total, "model": model}
        cost = estimate_cost_usd(model, u)
        metrics.FRAMES.labels("in").inc(self.frames_in)
        metrics.FRAMES.labels("out").inc(frames_out)
        for reason, count in dropped.items():
            metrics.FRAMES_DROPPED.labels(reason).inc(count)
        for kind, value in (("input_text", u.input_text), ("input_audio", u.input_audio),
                            ("output_text", u.output_text), ("output_audio", u.output_audio)):
            metrics.TOKENS.labels(kind).inc(value)
        metrics.COST.inc(cost)
        return figures, usage, cost


def histogram_percentile(counts: list[int], p: float) -> int | None:
    """The p-th percentile of a histogram of 1 ms buckets (bucket index = ms)."""
    total = sum(counts)
    if not total:
        return None
    rank = p / 100 * total
    seen = 0
    for ms, count in enumerate(counts):
        seen += count
        if seen >= rank:
            return ms
    return len(counts) - 1


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)
