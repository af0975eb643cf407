"""The Flask application factory: the one way in."""
from __future__ import annotations

from flask import Flask, jsonify
from werkzeug.exceptions import HTTPException

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
    db = request_db.init_app(app, settings.database_url)

    from server import cli
    from server.routes import api, health, media, webhooks
    from services.call_journal import JournalWriter
    from services.live_calls import LiveCalls
    from services.retried_writes import RetriedWrites

    app.extensions["live_calls"] = LiveCalls()
    app.extensions["journal"] = JournalWriter(db)
    app.extensions["retried_writes"] = RetriedWrites(db)
    app.register_blueprint(webhooks.bp)
    app.register_blueprint(health.bp)
    app.register_blueprint(api.bp)
    media.init_app(app)
    cli.init_app(app)

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException):
        return jsonify(error=exc.description or exc.name), exc.code

    return app
