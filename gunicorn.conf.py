"""gunicorn settings: the plain gevent worker (Flask-Sock supports it; gevent-websocket's does not).

A worker carries many calls, each a long websocket. `timeout` only kills a worker whose
event loop is blocked (and then every call on it is lost), so it is generous; on a
deploy live calls get `graceful_timeout` to finish.
"""
import os

bind = f"0.0.0.0:{os.environ.get('PORT', '5000')}"
worker_class = "gevent"
workers = int(os.environ.get("WEB_CONCURRENCY", "1"))
worker_connections = int(os.environ.get("WORKER_CONNECTIONS", "1000"))
timeout = 120
graceful_timeout = int(os.environ.get("GRACEFUL_TIMEOUT", "600"))
keepalive = 5
# TCP_NODELAY: gunicorn sets it on the listener and Linux accepted sockets inherit it.
accesslog = None
# The app configures logging itself (one configuration for everything).
logconfig_dict = {"version": 1, "disable_existing_loggers": False, "root": {"level": "INFO"}}


def on_starting(server):
    """Bring the SQLite schema up once, in the master, before workers start."""
    from server.settings import Settings

    settings = Settings.from_env()
    if settings.is_sqlite:
        from server.db import Database

        db = Database(settings.database_url)
        db.upgrade()
        db.dispose()


def post_worker_init(worker):
    """Once gevent has patched and the app is loaded: see `server.serving`."""
    from server.serving import start_serving

    start_serving(worker.wsgi)


def worker_exit(server, worker):
    from server.serving import stop_serving

    stop_serving()
