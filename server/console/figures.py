"""The overview's totals, from stored call rows: pure functions of the rows, no queries, no clock."""
from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any, Iterable, Sequence
from xml.sax.saxutils import escape

from services.store.end_reasons import FAILURES, EndReason
from services.store.models import as_utc

# Who ended a call, grouped as services/store/end_reasons.py groups them: the caller or the
# line; the agent or call control; our side's failures. The rest (refused at the webhook, never
# connected, a deploy) is "other".
ENDED_BY_CALLER = frozenset({EndReason.CALLER_HANGUP, EndReason.CALLER_GOODBYE, EndReason.STREAM_CLOSED,
                             EndReason.TWILIO_IDLE})
ENDED_BY_AGENT = frozenset({EndReason.AGENT_HANGUP, EndReason.TRANSFER, EndReason.SILENCE, EndReason.MAX_DURATION})


@dataclass(frozen=True)
class CallRow:
    """What the overview reads of one call."""

    started_at: datetime
    end_reason: str | None
    answered: bool  # its media stream started: the agent took the call
    transferred: bool
    duration_s: float | None
    cost_usd: float | None
    metrics: dict[str, Any]


@dataclass(frozen=True)
class Totals:
    calls: int
    answered: int
    refused_by_limits: int
    transferred: int
    ended_by: dict[str, int]  # agent, caller, fault, other
    greeting_p50_ms: float | None
    greeting_p95_ms: float | None
    turn_p50_ms: float | None
    turn_p95_ms: float | None
    cost_per_call_usd: float | None
    cost_per_minute_usd: float | None


def ended_by(end_reason: str | None) -> str | None:
    """"agent", "caller", "fault" or "other"; None for a call not over."""
    if end_reason is None:
        return None
    if end_reason in FAILURES:
        return "fault"
    if end_reason in ENDED_BY_AGENT:
        return "agent"
    if end_reason in ENDED_BY_CALLER:
        return "caller"
    return "other"


def percentile(values: Sequence[float], p: float) -> float | None:
    """Nearest rank: the smallest value with at least p% of the values at or below it."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def totals(rows: Iterable[CallRow]) -> Totals:
    rows = list(rows)
    ended = {"agent": 0, "caller": 0, "fault": 0, "other": 0}
    greetings: list[float] = []
    turns: list[float] = []
    costs: list[float] = []
    priced_cost = priced_seconds = 0.0
    for row in rows:
        group = ended_by(row.end_reason)
        if group:
            ended[group] += 1
        greeting = row.metrics.get("greeting_latency_ms")
        if _is_number(greeting):
            greetings.append(float(greeting))
        turns.extend(float(v) for v in row.metrics.get("response_latency_ms") or () if _is_number(v))
        if row.cost_usd is not None:
            costs.append(row.cost_usd)
            if row.duration_s:
                priced_cost += row.cost_usd
                priced_seconds += row.duration_s
    return Totals(
        calls=len(rows),
        answered=sum(row.answered for row in rows),
        refused_by_limits=sum(row.end_reason == EndReason.LIMIT for row in rows),
        transferred=sum(row.transferred for row in rows),
        ended_by=ended,
        greeting_p50_ms=percentile(greetings, 50), greeting_p95_ms=percentile(greetings, 95),
        turn_p50_ms=percentile(turns, 50), turn_p95_ms=percentile(turns, 95),
        cost_per_call_usd=sum(costs) / len(costs) if costs else None,
        cost_per_minute_usd=priced_cost / (priced_seconds / 60) if priced_seconds else None,
    )


def calls_per_day(starts: Iterable[datetime], zone, last_day: date, days: int) -> list[tuple[date, int]]:
    """How many calls started on each of the `days` days up to `last_day`, in `zone`."""
    counts = {last_day - timedelta(days=n): 0 for n in range(days)}
    for started in starts:
        day = as_utc(started).astimezone(zone).date()
        if day in counts:
            counts[day] += 1
    return sorted(counts.items())


def bar_chart_svg(points: list[tuple[date, int]], title: str) -> str:
    """A bar per day, drawn server-side: no script, no vendored library. Left to right in time."""
    width, height, top, bottom = 560, 160, 14, 22
    peak = max((n for _, n in points), default=0) or 1
    slot = width / max(1, len(points))
    bars = []
    for index, (day, count) in enumerate(points):
        bar_height = (height - top - bottom) * count / peak
        x = index * slot + slot * 0.15
        y = height - bottom - bar_height
        label = f"{day:%d.%m}"
        bars.append(
            f'<g><title>{escape(label)}: {count}</title>'
            f'<rect class="bar" x="{x:.1f}" y="{y:.1f}" width="{slot * 0.7:.1f}" height="{bar_height:.1f}"/>'
            f'<text x="{x + slot * 0.35:.1f}" y="{y - 3:.1f}" text-anchor="middle">{count}</text>'
            f'<text x="{x + slot * 0.35:.1f}" y="{height - 6}" text-anchor="middle">{escape(label)}</text></g>')
    return (f'<svg class="chart" id="calls-per-day" viewBox="0 0 {width} {height}" role="img" '
            f'aria-label="{escape(title, {chr(34): "&quot;"})}" direction="ltr">' + "".join(bars) + "</svg>")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
