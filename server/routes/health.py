"""Liveness and Prometheus metrics.

/metrics needs `Authorization: Bearer METRICS_TOKEN` when that is set; unset, it answers as the
API without its token does: loopback peers of a server that listens on loopback only.
"""
from __future__ import annotations

import logging

from flask import Blueprint, Response, abort, current_app, jsonify, request
from prometheus_client import CONTENT_TYPE_LATEST

from server.security import bearer_credential, loopback_only_refusal, same_secret
from services.metrics import exposition
from services.live_calls import this_process

bp = Blueprint("health", __name__)
log = logging.getLogger("server")
NO_TOKEN_NOTE = ("METRICS_TOKEN is not set: /metrics answers only loopback peers of a server that listens on "
                 "loopback (HOST=127.0.0.1); set METRICS_TOKEN and scrape with Authorization: Bearer <it>")


@bp.record_once
def _say_how_metrics_open(state) -> None:
    settings = state.app.config["SETTINGS"]
    if not settings.metrics_token:
        # Louder when that leaves /metrics closed to everyone.
        log.log(logging.INFO if settings.listens_on_loopback_only else logging.WARNING, NO_TOKEN_NOTE)


@bp.get("/healthz")
def healthz():
    """This process's own view: the calls it carries now (each worker answers for itself)."""
    settings = current_app.config["SETTINGS"]
    return jsonify(status="ok", active_calls=len(current_app.extensions["live_calls"]), worker=this_process(),
                   twilio_signature_check="off" if settings.unsigned_twilio_allowed else "on")


@bp.get("/metrics")
def metrics() -> Response:
    settings = current_app.config["SETTINGS"]
    if settings.metrics_token:
        given = bearer_credential(request.headers.get("Authorization", ""))
        if given is None or not same_secret(given, settings.metrics_token):
            abort(401, "missing or wrong bearer token (METRICS_TOKEN)")
    else:
        why = loopback_only_refusal(settings.listens_on_loopback_only, request.remote_addr, "METRICS_TOKEN")
        if why:
            abort(403, why)
    return Response(exposition(), mimetype=CONTENT_TYPE_LATEST)
