"""Admin REST API under /api (Bearer ADMIN_API_TOKEN; loopback only when unset).

Every request's Host header must be one the API answers to (ALLOWED_HOSTS): a browser page
on another site that renames itself to 127.0.0.1 by DNS (rebinding) still sends its own name.

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
    settings = current_app.config["SETTINGS"]
    host = _host_name(request.host)
    if host not in settings.api_hosts:
        log.warning("api request for a host not allowed", extra={"host": request.host[:200], "path": request.path})
        abort(400, "this Host is not allowed (ALLOWED_HOSTS)")
    token = settings.admin_api_token
    if token:
        given = request.headers.get("Authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            abort(401, "missing or wrong bearer token")
        return
    # The peer's address alone is not enough: a reverse proxy on this host makes every peer loopback.
    if not settings.listens_on_loopback_only:
        abort(403, "ADMIN_API_TOKEN is not set and the server does not listen on loopback only (HOST)")
    if not _is_loopback(request.remote_addr):
        abort(403, "ADMIN_API_TOKEN is not set: the API answers loopback only")


def _host_name(host: str) -> str:
    """The Host header's name, lower case, without its port ("[::1]:5000" is "::1")."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1:].partition("]")[0]
    if host.count(":") == 1:
        return host.partition(":")[0]
    return host


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
