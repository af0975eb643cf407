"""Live calls: the calls in progress on every worker and host, each with its transcript as it is
stored, its state and its duration (services/live_feed.py, streamed as Server-Sent Events), and
End call (services/end_requests.py: the process holding the call says goodbye and hangs up)."""
from __future__ import annotations

import json
import logging
import time

from flask import Flask, Response, abort, current_app, flash, redirect, render_template, request, session, url_for
from sqlalchemy import select

from server.console import labels
from server.console.access import Viewer, current_viewer, scoped
from server.console.blueprint import bp
from server.request_db import get_db, request_session
from services.end_requests import request_end
from services.live_feed import LiveFeed, read_live_calls, sse_comment, sse_event
from services.store import audit
from services.store.models import Business, Call

log = logging.getLogger("console")
# A stream ends after this long and the browser opens a new one: the viewer's sign-in is checked
# again (a revoked key stops seeing calls), and no connection lives for ever.
STREAM_MAX_S = 300.0
RECONNECT_MS = 3000  # EventSource's wait before it opens a new stream


def feed_of(app: Flask) -> LiveFeed:
    """The process's one feed, made on first use."""
    feed = app.extensions.get("live_feed")
    if feed is None:
        feed = app.extensions["live_feed"] = LiveFeed(get_db())
    return feed


@bp.get("/live")
def live():
    viewer = current_viewer()
    db_session = request_session()
    calls, _ = read_live_calls(db_session, business_id=viewer.business_id)  # the viewer's scope, as `scoped`
    names = dict(db_session.execute(scoped(select(Business.id, Business.name), Business.id, viewer)).all())
    return render_template("console/live.html", calls=list(calls.values()), names=names, now=time.time(),
                           state_labels=_state_labels(), speaker_labels=_speaker_labels())


@bp.get("/live/events")
def live_events():
    """text/event-stream: `snapshot` (the calls now), then `update`s (changed calls with their new
    turns, and the calls that ended), comment lines while quiet. Ends when the client goes (a write
    fails), when the process stops, or after STREAM_MAX_S."""
    business_id = current_viewer().business_id
    app = current_app._get_current_object()
    feed = feed_of(app)
    live_calls = app.extensions["live_calls"]

    def stream():
        # Subscribed here, not before: a response closed before its first write never subscribes.
        subscription = feed.subscribe(business_id)
        try:
            yield f"retry: {RECONNECT_MS}\n" + sse_comment("live calls")
            until = time.monotonic() + STREAM_MAX_S
            while not subscription.dropped and not live_calls.closed:
                left = until - time.monotonic()
                if left <= 0:
                    return
                event = subscription.next_event(timeout=min(feed.heartbeat_s, left))
                if event is None:
                    yield sse_comment("heartbeat")
                else:
                    name, payload = event
                    yield sse_event(name, json.dumps(payload, ensure_ascii=False))
        finally:
            feed.leave(subscription)

    return Response(stream(), mimetype="text/event-stream",
                    headers={"X-Accel-Buffering": "no"})  # nginx: pass each event on at once


@bp.post("/live/<call_sid>/end")
def end_call(call_sid: str):
    """The agent says goodbye and hangs up, in whichever process holds the call."""
    viewer = current_viewer()
    db_session = request_session()
    call = db_session.scalar(scoped(select(Call).where(Call.call_sid == call_sid), Call.business_id, viewer))
    if call is None:
        abort(404, labels.t("call_not_found"))
    if call.ended_at is not None or call.stream_sid is None:
        flash(labels.t("end_call_not_live"), "error")
        return redirect(url_for("console.live"), 303)
    requested = request_end(db_session, call.id)
    if requested:
        audit.record(db_session, _actor(viewer), audit.Change("call", call_sid, call.business_id, ("end_requested_at",)),
                     method=request.method, route=request.url_rule.rule, status=303)
    db_session.commit()
    log.info("End call asked for from the console", extra={"call_sid": call_sid, "business_id": call.business_id,
                                                          "first_ask": requested})
    flash(labels.t("end_call_requested"), "ok")
    return redirect(url_for("console.live"), 303)


def _actor(viewer: Viewer) -> audit.Actor:
    if viewer.is_admin:
        return audit.Actor(kind="admin", client_addr=request.remote_addr)
    key_id = (session.get("viewer") or {}).get("key_id")  # checked by the sign-in rule for this request
    return audit.Actor(kind="key", api_key_id=key_id, business_id=viewer.business_id, client_addr=request.remote_addr)


def _state_labels() -> dict[str, str]:
    return {"greeting": labels.t("state_greeting"), "listening": labels.t("state_listening"),
            "speaking": labels.t("state_speaking"), "ending": labels.t("state_ending")}


def _speaker_labels() -> dict[str, str]:
    return {"agent": labels.t("agent"), "caller": labels.t("caller"), "dtmf": labels.t("dtmf")}
