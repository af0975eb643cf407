"""Admin REST API under /api: the admin (ADMIN_API_TOKEN; loopback only when unset) or a
business's key (server/routes/api/principal.py), rate limited (rate_limits.py), every change
audited (auditing.py).

Every request's Host header must be one the API answers to (ALLOWED_HOSTS): a browser page
on another site that renames itself to 127.0.0.1 by DNS (rebinding) still sends its own name.

One child blueprint per resource; auth and JSON errors live here and apply to all.
"""
from __future__ import annotations

import logging

from flask import Blueprint, Flask, abort, current_app, jsonify, request
from flask_limiter import RateLimitExceeded
from werkzeug.exceptions import HTTPException

from server.api_schemas import ValidationError
from server.routes.api import (api_keys, appointments, audit_log, auditing, businesses, calls, leads, outbound,
                               principal, rate_limits)
from server.security import host_name

bp = Blueprint("api", __name__, url_prefix="/api")
bp.register_blueprint(businesses.bp)
bp.register_blueprint(api_keys.bp)
bp.register_blueprint(calls.bp)
bp.register_blueprint(leads.bp)
bp.register_blueprint(outbound.bp)
bp.register_blueprint(appointments.bp)
bp.register_blueprint(audit_log.bp)
bp.after_request(auditing.record_unnoted)
log = logging.getLogger("api")
NO_TOKEN_NOTE = ("ADMIN_API_TOKEN is not set: the API answers only loopback peers of a server that listens "
                 "on loopback (HOST=127.0.0.1); set ADMIN_API_TOKEN to open it to others")


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)
    rate_limits.init_app(app, bp)
    if not app.config["SETTINGS"].admin_api_token:
        log.info(NO_TOKEN_NOTE)


@bp.before_request
def _authorize() -> None:
    settings = current_app.config["SETTINGS"]
    host = host_name(request.host)
    if host not in settings.api_hosts:
        log.warning("api request for a host not allowed", extra={"host": request.host[:200], "path": request.path})
        abort(400, "this Host is not allowed (ALLOWED_HOSTS)")
    refused = principal.refusal()
    if refused is not None:
        status, why = refused
        abort(status, why)


@bp.errorhandler(ValidationError)
def _invalid(exc: ValidationError):
    return jsonify(error=str(exc), fields=exc.fields), 422


@bp.errorhandler(RateLimitExceeded)
def _too_many(exc: RateLimitExceeded):
    return rate_limits.too_many_requests(exc, current_app.extensions["api_limiter"])


# Needed although the app has one: otherwise the Exception handler below, being the
# blueprint's, would be chosen for 4xx aborts too.
@bp.errorhandler(HTTPException)
def _http_error(exc: HTTPException):
    return jsonify(error=exc.description or exc.name), exc.code


@bp.errorhandler(Exception)
def _unexpected(exc: Exception):
    log.error("unhandled error", extra={"method": request.method, "path": request.path}, exc_info=exc)
    return jsonify(error="internal error"), 500
