"""The overview: a day's and its week's calls, their outcomes, latencies and cost, and a chart."""
from __future__ import annotations

from datetime import date, datetime, timedelta

from flask import abort, render_template, request
from markupsafe import Markup
from sqlalchemy import select

from server.console import figures, labels
from server.console.access import current_viewer, scoped
from server.console.blueprint import bp
from server.console.views.calls import console_day, local_midnight
from server.request_db import request_session
from services.store.end_reasons import EndReason
from services.store.models import Call, as_utc

CHART_DAYS = 14


def week_start(day: date) -> date:
    """The Sunday that starts `day`'s week, as weeks run in Israel."""
    return day - timedelta(days=(day.weekday() + 1) % 7)


@bp.get("")
@bp.get("/")
def overview():
    viewer = current_viewer()
    today = datetime.now(labels.ZONE).date()
    day = today
    if request.args.get("day"):  # another day and its week, e.g. last week's figures
        try:
            day = console_day(request.args["day"])
        except (TypeError, ValueError):
            abort(400, "day must be a date such as 2025-01-31")
    first = min(week_start(day), day - timedelta(days=CHART_DAYS - 1))
    stmt = scoped(select(Call.started_at, Call.end_reason, Call.stream_sid, Call.transfer_to, Call.duration_s,
                         Call.cost_usd, Call.metrics), Call.business_id, viewer)
    stmt = stmt.where(Call.started_at >= local_midnight(first), Call.started_at < local_midnight(day + timedelta(days=1)))
    # Test calls (Talk to your agent) are not the business's calls: left out unless asked for.
    with_tests = request.args.get("tests") == "1"
    if not with_tests:
        stmt = stmt.where(Call.is_test.is_(False))
    rows = [figures.CallRow(started_at=r.started_at, end_reason=r.end_reason, answered=r.stream_sid is not None,
                            transferred=r.transfer_to is not None or r.end_reason == EndReason.TRANSFER,
                            duration_s=r.duration_s, cost_usd=r.cost_usd, metrics=r.metrics or {})
            for r in request_session().execute(stmt)]
    week_from, day_from = local_midnight(week_start(day)), local_midnight(day)
    week = figures.totals(r for r in rows if as_utc(r.started_at) >= week_from)
    today_totals = figures.totals(r for r in rows if as_utc(r.started_at) >= day_from)
    chart = figures.bar_chart_svg(
        figures.calls_per_day((r.started_at for r in rows), labels.ZONE, day, CHART_DAYS), labels.t("calls_per_day"))
    return render_template("console/overview.html", week=week, today=today_totals, day=day,
                           is_today=day == today, chart=Markup(chart), with_tests=with_tests)
