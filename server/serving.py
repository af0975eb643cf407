"""What each serving process does once its app is loaded, before it takes calls.

`start_serving` is called by gunicorn's `post_worker_init` and by `python app.py`; never by
`create_app`, which tests and one-off commands also use. `refuse_unfit_server` is called by
`create_app`: it must run however gunicorn was started, with our config file or without it.
"""
from __future__ import annotations

import gc
import logging
import sys

from flask import Flask

from services.post_call.worker import start_workers

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
