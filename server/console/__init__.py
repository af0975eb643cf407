"""The business console under /console: server-rendered pages, a little JavaScript, no build step.

Sign-in (`access`), the overview, call history and call pages, business settings. Every page
but the sign-in wants a viewer; every form carries a CSRF token (Flask-WTF); every query is
scoped to the viewer's business (`access.scoped`). Front-end files are served from `static/`,
third-party ones vendored under `static/vendor/`: nothing is fetched from elsewhere at run time.
"""
from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from datetime import timedelta

from flask import Flask, redirect, url_for

from server.console import access
from server.console.blueprint import bp, csrf
from server.console.throttle import SignInThrottle

log = logging.getLogger("console")
SESSION_LIFETIME = timedelta(hours=12)


def init_app(app: Flask) -> None:
    settings = app.config["SETTINGS"]
    app.secret_key = _session_key(settings.secret_key)
    app.config.update(
        SESSION_COOKIE_NAME="console_session",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=(settings.public_base_url or "").startswith("https://"),
        SESSION_COOKIE_PATH="/console",
        PERMANENT_SESSION_LIFETIME=SESSION_LIFETIME,
        # Checked by the console's own before_request only: webhooks and the JSON API have their own guards.
        WTF_CSRF_CHECK_DEFAULT=False,
        # The token lives in the session, which expires by itself.
        WTF_CSRF_TIME_LIMIT=None,
    )
    csrf.init_app(app)
    app.extensions["console_throttle"] = SignInThrottle()
    if not settings.admin_api_token:
        log.warning(access.NO_TOKEN_HINT)

    # Imported for their routes.
    from server.console.views import (business, calls, live, new_business, overview, sign_in, talk,  # noqa: F401
                                      webhook_test)

    app.register_blueprint(bp)
    app.add_url_rule("/", "root", lambda: redirect(url_for("console.overview")))


def _session_key(secret_key: str) -> bytes:
    """A key for the console's cookies of its own, derived from SECRET_KEY (which signs stream tokens)."""
    if not secret_key:
        log.warning("SECRET_KEY is empty: console sessions are signed with a key of this process only")
        secret_key = secrets.token_hex(32)
    return hmac.new(secret_key.encode(), b"console-session", hashlib.sha256).digest()
