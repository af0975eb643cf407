"""Admin REST API under /api (Bearer ADMIN_API_TOKEN; loopback only when unset)."""
from __future__ import annotations

import hmac
import ipaddress
import logging

from flask import Blueprint, abort, current_app, request

bp = Blueprint("api", __name__, url_prefix="/api")
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
