"""gunicorn settings: the plain gevent worker (Flask-Sock supports it; gevent-websocket's does not).

A worker carries many calls, each a long websocket. `timeout` only kills a worker whose
event loop is blocked (and then every call on it is lost), so it is generous. On SIGTERM
(a deploy) a worker takes no new stream, gives live calls SHUTDOWN_DRAIN_S to end, then
closes each with a goodbye (services/shutdown.py), all within `graceful_timeout`.
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

# HOST is read by the settings too (the admin API without a token trusts a loopback bind only):
# bind through HOST and PORT, not gunicorn's --bind.
_host = os.environ.get("HOST", "").strip() or "0.0.0.0"
bind = f"[{_host}]:{os.environ.get('PORT', '5000')}" if ":" in _host and not _host.startswith("[") \
    else f"{_host}:{os.environ.get('PORT', '5000')}"
worker_class = "gevent"
workers = int(os.environ.get("WEB_CONCURRENCY", "1"))
worker_connections = int(os.environ.get("WORKER_CONNECTIONS", "1000"))
timeout = 120
graceful_timeout = int(os.environ.get("GRACEFUL_TIMEOUT", "600"))
keepalive = 5
# TCP_NODELAY: gunicorn sets it on the listener and Linux accepted sockets inherit it.
accesslog = None
# One configuration for everything (services.logging_setup, installed by on_starting in the master
# and by the app in each worker): gunicorn's own loggers get no handlers of their own and pass their
# lines to it, so each line is written once, in one format.
logconfig_dict = {"version": 1, "disable_existing_loggers": False, "root": {"level": "INFO"},
                  "loggers": {"gunicorn.error": {"level": "INFO", "propagate": True},
                              "gunicorn.access": {"level": "INFO", "propagate": True}}}


def on_starting(server):
    """Once, in the master, before workers start: a clean metrics directory, the SQLite schema."""
    from services.logging_setup import configure_logging
    from services.metrics import clear_worker_files
    from services.settings import Settings

    settings = Settings.from_env()
    configure_logging(settings.log_level, settings.log_levels)
    clear_worker_files(os.environ["PROMETHEUS_MULTIPROC_DIR"])

    if settings.is_sqlite:
        from services.store.db import Database

        db = Database(settings.database_url)
        db.upgrade()
        db.dispose()


def post_worker_init(worker):
    """Once gevent has patched and the app is loaded: see `server.serving`."""
    from server.serving import check_shutdown_budget, drain_on_sigterm, start_serving

    start_serving(worker.wsgi)
    drain_on_sigterm(worker)
    check_shutdown_budget(worker)


def worker_int(worker):
    """SIGINT or SIGQUIT: gunicorn's quick stop (the worker exits right after this)."""
    from server.serving import stop_quickly

    stop_quickly(worker.wsgi)


# worker_abort (SIGABRT) is left alone: the master sends it to a worker whose loop was blocked
# past `timeout`, and its handler runs inside the signal, where nothing may wait on the loop.


def worker_exit(server, worker):
    from server.serving import finish_stopping, stop_serving

    if getattr(worker, "wsgi", None) is not None:  # None: the worker died before its app loaded
        finish_stopping(worker.wsgi)
    stop_serving()


def child_exit(server, worker):
    from services.metrics import worker_gone

    worker_gone(worker.pid)


def on_exit(server):
    if _made_metrics_dir:
        shutil.rmtree(_made_metrics_dir, ignore_errors=True)
