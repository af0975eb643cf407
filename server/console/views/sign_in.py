"""Sign-in with the admin token or a business's API key, sign-out, and the language switch."""
from __future__ import annotations

import logging
import math

import gevent
from flask import current_app, g, redirect, render_template, request, session, url_for

from server.console import access, forms, labels
from server.console.blueprint import bp
from server.console.throttle import FAILURE_DELAY_S
from server.request_db import request_session

log = logging.getLogger("console")


@bp.route("/sign-in", methods=["GET", "POST"])
def sign_in():
    settings = current_app.config["SETTINGS"]
    target = forms.safe_next(request.values.get("next"), url_for("console.overview"))
    if g.console_viewer is not None and request.method == "GET":
        return redirect(target)
    hint = None if settings.admin_api_token else labels.t("no_token_hint")
    if request.method == "GET":
        return render_template("console/sign_in.html", next=target, error=None, hint=hint)

    throttle = current_app.extensions["console_throttle"]
    peer = request.remote_addr or "?"
    wait_s = throttle.retry_after_s(peer)
    if wait_s:
        log.warning("console sign-in refused: too many attempts", extra={"peer": peer})
        error = labels.t("too_many_attempts", minutes=max(1, math.ceil(wait_s / 60)))
        return render_template("console/sign_in.html", next=target, error=error, hint=hint), 429, \
            {"Retry-After": str(math.ceil(wait_s))}
    secret = request.form.get("secret", "").strip()
    viewer = access.sign_in(request_session(), settings, secret) if secret else None
    if viewer is None:
        throttle.failed(peer)
        log.info("console sign-in failed", extra={"peer": peer})
        gevent.sleep(FAILURE_DELAY_S)
        return render_template("console/sign_in.html", next=target, error=labels.t("wrong_secret"), hint=hint), 401
    throttle.succeeded(peer)
    log.info("console sign-in", extra={"business_id": "admin" if viewer.is_admin else viewer.business_id})
    return redirect(target)


@bp.post("/sign-out")
def sign_out():
    access.sign_out()
    return redirect(url_for("console.sign_in"))


@bp.post("/language")
def language():
    session["lang"] = "en" if labels.language(session.get("lang")) == "he" else "he"
    return redirect(forms.safe_next(request.form.get("next"), url_for("console.overview")))
