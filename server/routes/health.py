"""Liveness and Prometheus metrics."""
from __future__ import annotations

from flask import Blueprint, Response, current_app, jsonify
from prometheus_client import CONTENT_TYPE_LATEST

from services.metrics import exposition
from services.live_calls import this_process

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz():
    """This process's own view: the calls it carries now (each worker answers for itself)."""
    settings = current_app.config["SETTINGS"]
    return jsonify(status="ok", active_calls=len(current_app.extensions["live_calls"]), worker=this_process(),
                   twilio_signature_check="off" if settings.unsigned_twilio_allowed else "on")


@bp.get("/metrics")
def metrics() -> Response:
    return Response(exposition(), mimetype=CONTENT_TYPE_LATEST)
