"""Admin REST API under /api (Bearer ADMIN_API_TOKEN; loopback only when unset).

One child blueprint per resource; auth and JSON errors live here and apply to all.
"""
from __future__ import annotations

import hmac
import ipaddress
import logging

from flask import Blueprint, abort, current_app, jsonify, request
from werkzeug.exceptions import HTTPException

from server.api_schemas import ValidationError
from server.routes.api import appointments, businesses, calls, leads, outbound

bp = Blueprint("api", __name__, url_prefix="/api")
bp.register_blueprint(businesses.bp)
bp.register_blueprint(calls.bp)
bp.register_blueprint(leads.bp)
bp.register_blueprint(outbound.bp)
bp.register_blueprint(appointments.bp)
log = logging.getLogger("api")


@bp.before_request
def _authorize() -> None:
    token = current_app.config["SETTINGS"].admin_api_token
    if token:
        given = request.headers.get("Authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            abort(401, "missing or wrong bearer token")
        return
    if not _is_loopback(request.remote_addr):
        abort(403, "ADMIN_API_TOKEN is not set: the API answers loopback only")


def _is_loopback(addr: str | None) -> bool:
    try:
        return addr is not None and ipaddress.ip_address(addr).is_loopback
    except ValueError:
        return False


@bp.errorhandler(ValidationError)
def _invalid(exc: ValidationError):
    return jsonify(error=str(exc), fields=exc.fields), 422


# Needed although the app has one: otherwise the Exception handler below, being the
# blueprint's, would be chosen for 4xx aborts too.
@bp.errorhandler(HTTPException)
def _http_error(exc: HTTPException):
    return jsonify(error=exc.description or exc.name), exc.code


@bp.errorhandler(Exception)
def _unexpected(exc: Exception):
    log.error("unhandled error", extra={"method": request.method, "path": request.path}, exc_info=exc)
    return jsonify(error="internal error"), 500
