"""The console's blueprint and what applies to every one of its pages: the Host check, CSRF, the
sign-in requirement, headers that keep pages out of caches and frames, HTML error pages."""
from __future__ import annotations

import logging

from flask import Blueprint, current_app, g, redirect, render_template, request, session, url_for
from flask_wtf.csrf import CSRFError, CSRFProtect
from werkzeug.exceptions import HTTPException

from server.console import access, labels

bp = Blueprint("console", __name__, url_prefix="/console", template_folder="templates",
               static_folder="static", static_url_path="/static")
csrf = CSRFProtect()
log = logging.getLogger("console")
# Reachable without a viewer: the sign-in page itself, its stylesheet, the language switch.
OPEN_ENDPOINTS = frozenset({"console.sign_in", "console.static", "console.language"})


@bp.before_request
def _guard():
    settings = _settings()
    g.lang = labels.language(session.get("lang"))
    if not access.host_allowed(settings):
        log.warning("console request for a host not allowed", extra={"host": request.host[:200]})
        return _page_error(400, labels.t("host_not_allowed"))
    csrf.protect()
    viewer = access.viewer_of_request(settings)
    if viewer is None and request.endpoint not in OPEN_ENDPOINTS:
        return redirect(url_for("console.sign_in", next=request.full_path.removesuffix("?")))
    g.console_viewer = viewer


@bp.after_request
def _no_store(response):
    # Pages show transcripts and secrets: no cache keeps them after sign-out.
    if request.endpoint != "console.static":
        response.headers["Cache-Control"] = "no-store"
        response.headers["X-Frame-Options"] = "DENY"
        response.headers["Content-Security-Policy"] = (
            "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
            "media-src 'self'; frame-ancestors 'none'; form-action 'self'")
    return response


@bp.app_context_processor
def _template_globals():
    viewer = g.get("console_viewer")
    return {"t": labels.t, "lang": g.get("lang", labels.DEFAULT), "viewer": viewer, "local_time": labels.local_time,
            "text_dir": labels.direction(g.get("lang", labels.DEFAULT))}


@bp.errorhandler(CSRFError)
def _csrf_error(exc: CSRFError):
    log.info("console form refused", extra={"path": request.path, "reason": exc.description})
    return _page_error(400, labels.t("csrf_failed"))


@bp.errorhandler(HTTPException)
def _http_error(exc: HTTPException):
    return _page_error(exc.code or 500, exc.description or exc.name)


def _page_error(code: int, message: str):
    return render_template("console/error.html", code=code, message=message), code


def _settings():
    return current_app.config["SETTINGS"]
