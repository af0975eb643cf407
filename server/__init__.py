"""The Flask application factory: the one way in."""
from __future__ import annotations

from flask import Flask, jsonify
from werkzeug.exceptions import HTTPException
from werkzeug.middleware.proxy_fix import ProxyFix

from server import request_db
from server.serving import refuse_unfit_server
from services.logging_setup import configure_logging
from services.settings import Settings


def create_app(settings: Settings | None = None) -> Flask:
    settings = settings or Settings.from_env()
    configure_logging(settings.log_level, settings.log_levels)
    refuse_unfit_server()

    app = Flask(__name__, instance_relative_config=False)
    app.config["SETTINGS"] = settings
    app.json.ensure_ascii = False  # Hebrew stays readable in API answers.
    app.config["MAX_CONTENT_LENGTH"] = 1 << 20  # every route: a larger body is a 413, unread
    if settings.trusted_proxies:
        # The client address (rate limits, audit log, loopback checks) from that many proxies' X-Forwarded-For.
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=settings.trusted_proxies, x_proto=0, x_host=0, x_port=0,
                                x_prefix=0)
    db = request_db.init_app(app, settings.database_url)

    from server import cli, console
    from server.routes import api, health, media, warm_transfer, webhooks
    from services.call_journal import JournalWriter
    from services.call_watch import CallWatch, tick_for
    from services.end_requests import EndRequestWatch
    from services.live_calls import LiveCalls
    from services.realtime_pool import RealtimePool
    from services.retried_writes import RetriedWrites
    from services.twilio_rest import warm_up

    warm_up(settings)

    app.extensions["live_calls"] = LiveCalls()
    app.extensions["end_requests"] = EndRequestWatch(db, app.extensions["live_calls"])  # the console's End call
    app.extensions["journal"] = JournalWriter(db)
    app.extensions["call_watch"] = CallWatch(tick_for(settings.timing))
    app.extensions["retried_writes"] = RetriedWrites(db)
    app.extensions["realtime_pool"] = RealtimePool(
        settings.realtime_ws_url, settings.openai_api_key, size=settings.realtime_pool_size,
        max_size=settings.realtime_pool_max,
        idle_s=settings.realtime_pool_idle_s, warm_s=settings.realtime_pool_warm_s,
        connect_timeout_s=settings.timing.realtime_connect_timeout_s)
    app.register_blueprint(webhooks.bp)
    app.register_blueprint(warm_transfer.bp)
    app.register_blueprint(health.bp)
    api.init_app(app)
    console.init_app(app)  # /console, and / leads there
    media.init_app(app)
    cli.init_app(app)

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException):
        return jsonify(error=exc.description or exc.name), exc.code

    return app
