"""What each serving process does once its app is loaded, before it takes calls, and as it stops.

`start_serving` and the stop are called by gunicorn's hooks (gunicorn.conf.py) and by
`python app.py`; never by `create_app`, which tests and one-off commands also use.
`refuse_unfit_server` is called by `create_app`: it must run however gunicorn was started,
with our config file or without it.
"""
from __future__ import annotations

import gc
import logging
import signal
import sys

import gevent
from flask import Flask

from services.call_warm_up import warm_up_call_path
from services.post_call.worker import start_workers
from services.shutdown import Shutdown, check_budget

log = logging.getLogger("server")
# gevent-websocket's gunicorn worker (the old deployment's `-k`) and the handler it installs.
_GEVENT_WEBSOCKET = ("geventwebsocket.gunicorn.workers", "geventwebsocket.handler")


class UnfitServer(RuntimeError):
    """The process serves the app in a way that would break its calls."""


def refuse_unfit_server() -> None:
    """Refuse to start under gevent-websocket: its handler and Flask-Sock would both answer the
    websocket upgrade and every media stream would be corrupted. Its modules are loaded in the
    process by then (gunicorn imports the worker class in the master, before forking)."""
    loaded = [name for name in _GEVENT_WEBSOCKET if name in sys.modules]
    if loaded:
        message = ("gevent-websocket's worker breaks Flask-Sock's media streams: serve with gunicorn's "
                   "plain gevent worker, `gunicorn -c gunicorn.conf.py app:app` (or `-k gevent`), "
                   "not `-k geventwebsocket.gunicorn.workers.GeventWebSocketWorker`")
        log.error(message, extra={"loaded": ",".join(loaded)})
        raise UnfitServer(message)


def start_serving(app: Flask) -> None:
    # Each greenlet would keep its spawner and the stack it was spawned from (a debugging aid
    # nothing here reads): a few KB per call, and a stack walk at every spawn.
    gevent.config.track_greenlet_tree = False
    warm_up_call_path(app.extensions["db"], app.config["SETTINGS"])  # before the freeze: its objects stay
    # Startup leaves a few hundred thousand long-lived objects (SQLAlchemy, the openai
    # types, Flask). A full collection walks them all: a 50-100 ms stall of every call on
    # the worker. Frozen, they are never walked again; collections see only call state.
    gc.collect()
    gc.freeze()
    start_workers(app)


def stop_serving() -> None:
    # Frozen objects outlive the interpreter's last collection otherwise, and their
    # finalizers (logging's handler references) would run against torn-down modules.
    gc.unfreeze()


# --- stopping: see services/shutdown.py ---------------------------------------------------

def shutdown_of(app: Flask, budget_s: float | None = None) -> Shutdown:
    """The process's one Shutdown, made on first use (after the job workers started)."""
    if "shutdown" not in app.extensions:
        app.extensions["shutdown"] = Shutdown(app.extensions["live_calls"], app.config["SETTINGS"],
                                              app.extensions.get("job_worker"), budget_s,
                                              app.extensions.get("realtime_pool"))
    return app.extensions["shutdown"]


def drain_on_sigterm(worker) -> None:
    """gunicorn's gevent worker (post_worker_init): start the drain on SIGTERM.

    On SIGTERM gunicorn only clears `worker.alive`; within a second its loop closes the
    listener, then waits up to graceful_timeout for open connections (a call is one) and kills
    what is left. The drain runs beside that wait: its handler is chained to gunicorn's.
    """
    shutdown = shutdown_of(worker.wsgi, budget_s=worker.cfg.graceful_timeout)
    gunicorn_handler = signal.getsignal(signal.SIGTERM)

    def on_sigterm(signum, frame) -> None:
        if callable(gunicorn_handler):
            gunicorn_handler(signum, frame)
        shutdown.begin()  # only spawns: safe in a signal handler

    signal.signal(signal.SIGTERM, on_sigterm)


def check_shutdown_budget(worker) -> None:
    """At start-up, whether a stop leaves calls their drain and goodbye. Said by the master's first
    worker only: one line per start, not one per worker (the master has no logging of ours)."""
    if worker.age == 1:
        check_budget(worker.wsgi.config["SETTINGS"], worker.cfg.graceful_timeout)


def stop_quickly(app: Flask) -> None:
    """gunicorn's worker_int (SIGINT or SIGQUIT: a quick stop, the worker exits at once): the
    calls end now, without a goodbye, but their rows and post-call jobs are stored."""
    shutdown_of(app).hurry()


def finish_stopping(app: Flask) -> None:
    """gunicorn's worker_exit: the worker's loop is over. Let the drain finish within its budget;
    after an exit without SIGTERM, end whatever is still running."""
    shutdown = shutdown_of(app)
    if shutdown.begun:
        shutdown.wait()
    else:
        shutdown.hurry()
