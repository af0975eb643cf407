"""gunicorn settings: the plain gevent worker (Flask-Sock supports it; gevent-websocket's does not).

A worker carries many calls, each a long websocket. `timeout` only kills a worker whose
event loop is blocked (and then every call on it is lost), so it is generous; on a
deploy live calls get `graceful_timeout` to finish.
"""
import os
import shutil
import tempfile

# Prometheus figures from every worker: each writes its own files here and /metrics sums them.
# Set before anything imports prometheus_client (the workers inherit it); a directory named by
# the operator is kept, one made here is removed on exit.
_made_metrics_dir = None
if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    _made_metrics_dir = os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="agent-metrics-")

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
    """Once, in the master, before workers start: a clean metrics directory, the SQLite schema."""
    from services.metrics import clear_worker_files
    from services.settings import Settings

    clear_worker_files(os.environ["PROMETHEUS_MULTIPROC_DIR"])

    settings = Settings.from_env()
    if settings.is_sqlite:
        from services.store.db import Database

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


def child_exit(server, worker):
    from services.metrics import worker_gone

    worker_gone(worker.pid)


def on_exit(server):
    if _made_metrics_dir:
        shutil.rmtree(_made_metrics_dir, ignore_errors=True)
