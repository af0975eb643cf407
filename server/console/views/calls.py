"""Call history (filters, transcript search, pages) and one call's page, with Reprocess."""
from __future__ import annotations

import logging
from datetime import date, datetime, time, timedelta, timezone
from typing import Annotated, Any

import requests
from flask import Response, abort, current_app, flash, redirect, render_template, request, url_for
from pydantic import BaseModel, BeforeValidator, ConfigDict
from sqlalchemy import select
from sqlalchemy.orm import selectinload

from server.api_schemas import Offset, QueryId, Status, ValidationError, choice, parse, says, text
from server.console import auditing, labels
from server.console.access import current_viewer, scoped
from server.console.blueprint import bp
from server.request_db import request_session
from services.post_call import jobs
from services.store import audit
from services.store.call_records import KNOWN_STATUSES
from services.store.end_reasons import EndReason
from services.store.models import Business, Call, Job, Turn, WebhookDelivery

log = logging.getLogger("console")
PAGE_SIZE = 25


def _blank_is_none(value: Any) -> Any:
    return None if value == "" else value


FIRST_DAY, LAST_DAY = date(2000, 1, 1), date(2999, 12, 31)  # beyond them, time zone arithmetic overflows


def console_day(value: Any) -> date:
    """A date as a date input sends it (2025-01-31), within the years the console can count in."""
    day = date.fromisoformat(value)
    if not FIRST_DAY <= day <= LAST_DAY:
        raise ValueError("out of range")
    return day


Day = Annotated[date, BeforeValidator(console_day), says("must be a date such as 2025-01-31")]


class CallHistoryFilter(BaseModel):
    """The history's query string: each filter optional, an empty field the same as none."""

    model_config = ConfigDict(extra="ignore")

    business_id: Annotated[QueryId | None, BeforeValidator(_blank_is_none)] = None
    direction: Annotated[choice("inbound", "outbound") | None, BeforeValidator(_blank_is_none)] = None
    status: Annotated[Status | None, BeforeValidator(_blank_is_none)] = None
    end_reason: Annotated[choice(*(r.value for r in EndReason)) | None, BeforeValidator(_blank_is_none)] = None
    date_from: Annotated[Day | None, BeforeValidator(_blank_is_none)] = None
    date_to: Annotated[Day | None, BeforeValidator(_blank_is_none)] = None
    q: Annotated[text(200) | None, BeforeValidator(_blank_is_none)] = None
    kind: Annotated[choice("real", "test") | None, BeforeValidator(_blank_is_none)] = None  # test: Talk to your agent's
    offset: Offset = 0


def local_midnight(day: date) -> datetime:
    """The start of `day` in Israel, in UTC as times are stored (SQLite compares them as text)."""
    return datetime.combine(day, time.min, tzinfo=labels.ZONE).astimezone(timezone.utc)


def history_query(viewer, query: CallHistoryFilter):
    stmt = scoped(select(Call), Call.business_id, viewer)
    if query.business_id is not None:
        stmt = stmt.where(Call.business_id == query.business_id)
    if query.direction is not None:
        stmt = stmt.where(Call.direction == query.direction)
    if query.status is not None:
        stmt = stmt.where(Call.status == query.status)
    if query.end_reason is not None:
        stmt = stmt.where(Call.end_reason == query.end_reason)
    if query.date_from is not None:
        stmt = stmt.where(Call.started_at >= local_midnight(query.date_from))
    if query.date_to is not None:  # inclusive: the whole of that day
        stmt = stmt.where(Call.started_at < local_midnight(query.date_to + timedelta(days=1)))
    if query.kind is not None:
        stmt = stmt.where(Call.is_test.is_(query.kind == "test"))
    if query.q:
        # Correlated, so that the turns read are those of the calls the other filters leave, newest
        # first, until the page is full: not every turn stored (LIKE '%…%' can use no index).
        said = select(Turn.id).where(Turn.call_id == Call.id, Turn.text.icontains(query.q.strip(), autoescape=True))
        stmt = stmt.where(said.exists())
    return stmt.order_by(Call.started_at.desc(), Call.id.desc())


@bp.get("/calls")
def calls():
    viewer = current_viewer()
    args = request.args.to_dict()
    errors: dict[str, str] = {}
    try:
        query = parse(CallHistoryFilter, args)
    except ValidationError as exc:
        errors, query = exc.fields, CallHistoryFilter()
    session = request_session()
    rows = [] if errors else session.scalars(
        history_query(viewer, query).limit(PAGE_SIZE + 1).offset(query.offset)).all()
    names = dict(session.execute(scoped(select(Business.id, Business.name), Business.id, viewer)).all())
    kept = {k: v for k, v in args.items() if k != "offset" and v}
    return render_template(
        "console/calls.html", calls=rows[:PAGE_SIZE], args=args, errors=errors, names=names,
        statuses=sorted(KNOWN_STATUSES), end_reasons=[r.value for r in EndReason],
        newer=url_for("console.calls", **kept, offset=max(0, query.offset - PAGE_SIZE)) if query.offset else None,
        older=url_for("console.calls", **kept, offset=query.offset + PAGE_SIZE) if len(rows) > PAGE_SIZE else None,
        page=query.offset // PAGE_SIZE + 1, local_time=labels.local_time,
    ), 400 if errors else 200


def viewed_call(call_sid: str) -> Call:
    """The call, if the viewer may see it; a 404 alike for one that is not there and one of another business."""
    stmt = scoped(select(Call).where(Call.call_sid == call_sid), Call.business_id, current_viewer())
    call = request_session().scalar(stmt.options(selectinload(Call.turns)))
    if call is None:
        abort(404, labels.t("call_not_found"))
    return call


@bp.get("/calls/<call_sid>")
def call_page(call_sid: str):
    session = request_session()
    call = viewed_call(call_sid)
    rows = session.scalars(select(Job).where(Job.call_id == call.id).order_by(Job.id)).all()
    deliveries = session.scalars(select(WebhookDelivery).where(WebhookDelivery.call_id == call.id)
                                 .order_by(WebhookDelivery.id)).all()
    business = session.get(Business, call.business_id) if call.business_id else None
    return render_template(
        "console/call.html", call=call, business=business, local_time=labels.local_time,
        post_call=next((j for j in rows if j.kind == jobs.POST_CALL), None), deliveries=deliveries,
        figures=call.metrics or {}, usage=call.usage or {},
    )


@bp.post("/calls/<call_sid>/reprocess")
def reprocess(call_sid: str):
    """As POST /api/calls/<sid>/reprocess: the post-call job again, from scratch."""
    session = request_session()
    call = viewed_call(call_sid)
    back = redirect(url_for("console.call_page", call_sid=call_sid))
    try:
        job = jobs.reprocess(session, call)
    except jobs.CallNotEnded:
        flash(labels.t("reprocess_live"), "error")
        return back
    except jobs.JobBusy:
        flash(labels.t("reprocess_busy"), "error")
        return back
    auditing.note(session, audit.Change("call", call_sid, call.business_id, ("post_call",)), status=302)
    session.commit()
    log.info("call queued for reprocessing from the console", extra={"call_sid": call_sid, "job_id": job.id})
    flash(labels.t("reprocess_queued"), "ok")
    return back


RECORDING_TIMEOUT_S = 30.0
PASSED_HEADERS = ("Content-Type", "Content-Length", "Content-Range", "Accept-Ranges")


@bp.get("/calls/<call_sid>/recording")
def recording(call_sid: str):
    """The call's recording as MP3, fetched from Twilio with the account's credentials and passed
    through as it arrives: the browser never sees Twilio's URL or needs the credentials."""
    settings = current_app.config["SETTINGS"]
    call = viewed_call(call_sid)
    url = call.recording_url or ""
    # The credentials go to Twilio's API only, whatever URL a callback stored.
    if call.recording_status != "completed" or not url.startswith(settings.twilio_api_base_url + "/"):
        abort(404, labels.t("no_recording"))
    headers = {"Range": request.headers["Range"]} if "Range" in request.headers else {}
    try:
        upstream = requests.get(f"{url}.mp3", headers=headers, stream=True, timeout=RECORDING_TIMEOUT_S,
                                auth=(settings.twilio_account_sid, settings.twilio_auth_token))
    except requests.RequestException as exc:
        log.warning("recording fetch failed", extra={"call_sid": call_sid, "error": type(exc).__name__})
        abort(502, labels.t("no_recording"))
    if upstream.status_code not in (200, 206):
        upstream.close()
        log.warning("recording fetch refused", extra={"call_sid": call_sid, "status": upstream.status_code})
        abort(502, labels.t("no_recording"))

    def body():
        try:
            yield from upstream.iter_content(chunk_size=32 * 1024)
        finally:
            upstream.close()

    passed = {name: upstream.headers[name] for name in PASSED_HEADERS if name in upstream.headers}
    passed.setdefault("Content-Type", "audio/mpeg")
    return Response(body(), status=upstream.status_code, headers=passed)
