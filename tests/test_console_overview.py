"""The overview's figures for a known week of stored calls, read off the page over HTTP."""
from __future__ import annotations

import dataclasses

import pytest

from server.console import figures
from services.store.models import Business, Call
from tests.console_client import ADMIN_TOKEN, ConsoleClient, business_key, israel_time, texts_of

DAY = "2025-03-04"  # a Tuesday; its week (Israel's) began on Sunday the 2nd


@pytest.fixture
def console_server(make_live_server, settings):
    return make_live_server(dataclasses.replace(settings, admin_api_token=ADMIN_TOKEN))


def store_week(live) -> tuple[int, int]:
    with live.db.session() as session:
        salon, clinic = Business(name="מספרה"), Business(name="מרפאה")
        session.add_all([salon, clinic])
        session.flush()

        def call(sid, business, started, reason, *, stream=True, transfer_to=None, greeting=None, turns=(),
                 cost=None, duration=None):
            metrics = {"response_latency_ms": list(turns)}
            if greeting is not None:
                metrics["greeting_latency_ms"] = greeting
            return Call(call_sid=sid, business_id=business.id, started_at=israel_time(started), status="completed",
                        end_reason=reason, stream_sid=f"MZ{sid}" if stream else None, transfer_to=transfer_to,
                        cost_usd=cost, duration_s=duration, metrics=metrics)

        session.add_all([
            # The day itself (00:30 in Israel is still the day before in UTC).
            call("A", salon, "2025-03-04 00:30", "caller_hangup", greeting=800, turns=(400, 600), cost=0.10, duration=60),
            call("B", salon, "2025-03-04 10:00", "limit", stream=False),
            call("C", salon, "2025-03-04 12:00", "transfer", transfer_to="+972501111111", greeting=1200, turns=(1000,),
                 cost=0.30, duration=120),
            # Earlier in the same week.
            call("D", salon, "2025-03-02 09:00", "realtime_dropped", greeting=1000, cost=0.20, duration=60),
            call("E", clinic, "2025-03-02 10:00", "agent_hangup", greeting=900, turns=(200, 800), duration=30),
            # The week before (Saturday night in Israel), and the day after: outside the week.
            call("F", salon, "2025-03-01 23:30", "caller_hangup", greeting=5000, cost=9.0, duration=60),
            call("G", salon, "2025-03-05 09:00", "caller_hangup", greeting=5000, cost=9.0, duration=60),
        ])
        return salon.id, clinic.id


def figure(page: str, name: str) -> str:
    [value] = texts_of(page, rf'data-figure="{name}">([^<]*)<')
    return value


def test_the_overview_totals_a_known_week(console_server):
    store_week(console_server)
    client = ConsoleClient(console_server.base_url)
    client.sign_in()
    answer = client.get(f"/console/?day={DAY}")
    assert answer.status_code == 200
    page = answer.text
    counts = {name: texts_of(page, rf'id="{name}">(\d+)<')[0]
              for name in ("calls-today", "calls-week", "answered", "refused", "transferred")}
    assert counts == {"calls-today": "3", "calls-week": "5", "answered": "4", "refused": "1", "transferred": "1"}
    ended = dict(zip(texts_of(page, r'data-group="(\w+)"'), texts_of(page, r'data-group="\w+">(\d+)<')))
    assert ended == {"agent": "2", "caller": "1", "fault": "1", "other": "1"}
    # Greetings 800, 900, 1000, 1200; turns 200, 400, 600, 800, 1000 (nearest rank).
    assert [figure(page, n) for n in ("greeting_p50", "greeting_p95", "turn_p50", "turn_p95")] == \
        ["900", "1200", "600", "1000"]
    # Cost: 0.60 over the three priced calls; 0.60 over their 4 minutes.
    assert figure(page, "cost_per_call") == "$0.200"
    assert figure(page, "cost_per_minute") == "$0.150"
    bars = texts_of(page, r"<title>([^<]+)</title><rect")
    assert len(bars) == 14
    assert bars[-4:] == ["01.03: 1", "02.03: 2", "03.03: 0", "04.03: 3"]


def test_a_business_sees_only_its_own_figures(console_server):
    _salon, clinic = store_week(console_server)
    key = business_key(console_server, clinic)
    client = ConsoleClient(console_server.base_url)
    client.sign_in(key)
    page = client.get(f"/console/?day={DAY}").text
    assert texts_of(page, r'id="calls-week">(\d+)<') == ["1"]
    assert figure(page, "greeting_p50") == "900"


def test_an_empty_week_shows_no_figures_rather_than_zeros(console_server):
    client = ConsoleClient(console_server.base_url)
    client.sign_in()
    page = client.get(f"/console/?day={DAY}").text
    assert texts_of(page, r'id="calls-week">(\d+)<') == ["0"]
    assert figure(page, "turn_p95") == "—" and figure(page, "cost_per_minute") == "—"


def test_a_day_the_overview_cannot_count_in_is_refused(console_server):
    client = ConsoleClient(console_server.base_url)
    client.sign_in()
    for day in ("0001-01-01", "9999-12-31", "yesterday"):
        assert client.get(f"/console/?day={day}").status_code == 400


def test_who_ended_the_call_follows_the_end_reasons_groups():
    assert figures.ended_by("caller_goodbye") == "caller"
    assert figures.ended_by("silence") == "agent"
    assert figures.ended_by("process_lost") == "fault"
    assert figures.ended_by("unknown_number") == "other"
    assert figures.ended_by(None) is None


def test_percentiles_take_the_nearest_rank():
    assert figures.percentile([], 50) is None
    assert figures.percentile([7.0], 95) == 7.0
    assert figures.percentile([4.0, 1.0, 3.0, 2.0], 50) == 2.0
    assert figures.percentile([5.0, 1.0, 3.0, 2.0, 4.0], 50) == 3.0
    assert figures.percentile(list(map(float, range(1, 101))), 95) == 95.0
