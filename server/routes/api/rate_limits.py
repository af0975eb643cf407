"""Rate limits on the API (Flask-Limiter): per key, and per client address for failed sign-ins.

Counts live where RATE_LIMIT_STORAGE_URL says: by default in each process's memory, so with N
workers (or hosts) a client gets up to N times a limit; a shared store (redis://...) counts once.
Only the API is limited: Twilio's webhooks and media streams are not.

The limiter checks in the app's before_request, ahead of the API's own check, so the principal
is resolved there first (`principal()` keeps it for the request).
"""
from __future__ import annotations

import math
import time

from flask import Blueprint, Flask, jsonify, request
from flask_limiter import Limiter, RateLimitExceeded
from limits.errors import ConfigurationError

from server.routes.api.principal import principal
from services.settings import SettingsError

# After a breach: the first moment a request will be let in again, at least a second away.
MIN_RETRY_AFTER_S = 1


def client_address() -> str:
    """The peer, or the client X-Forwarded-For names when TRUSTED_PROXIES says to believe it."""
    return request.remote_addr or "unknown"


def init_app(app: Flask, api: Blueprint) -> Limiter:
    settings = app.config["SETTINGS"]
    limiter = Limiter(client_address, storage_uri=settings.rate_limit_storage_url, strategy="moving-window",
                      key_prefix="api")
    limiter.shared_limit(settings.api_rate_limit, scope="per-principal", key_func=_bucket,
                         exempt_when=lambda: principal() is None,
                         error_message="too many requests for this key; see Retry-After")(api)
    # Counted only when refused for the credential, checked on every request: once past it, an
    # address guessing keys gets 429 even for a right guess, so guessing learns nothing more.
    limiter.shared_limit(settings.api_auth_failure_limit, scope="auth-failures", key_func=client_address,
                         deduct_when=lambda response: response.status_code == 401,
                         error_message="too many failed sign-ins from this address; see Retry-After")(api)
    # The limits are the API's: every other request (Twilio's webhooks and media upgrades, at each
    # call's start) skips the limiter's search for limits that cannot apply to it.
    limiter.request_filter(lambda: api.name not in request.blueprints)
    try:
        limiter.init_app(app)  # makes the storage: an unknown scheme or a missing client package fails here
    except ConfigurationError as exc:
        raise SettingsError(f"RATE_LIMIT_STORAGE_URL: {exc}") from None
    app.extensions["api_limiter"] = limiter
    return limiter


def too_many_requests(exc: RateLimitExceeded, limiter: Limiter):
    """429 with a JSON error, and Retry-After: when the breached window lets a request in again."""
    limit = limiter.current_limit
    # window[0]: when the window's oldest counted request drops out of it.
    wait = limit.window[0] - time.time() if limit is not None else 60
    response = jsonify(error=exc.description)
    response.status_code = 429
    response.headers["Retry-After"] = str(max(MIN_RETRY_AFTER_S, math.ceil(wait)))
    return response


def _bucket() -> str:
    found = principal()
    return found.bucket if found is not None else client_address()
