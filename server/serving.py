"""What each serving process does once its app is loaded, before it takes calls.

Called by gunicorn's `post_worker_init` and by `python app.py`; never by `create_app`,
which tests and one-off commands also use.
"""
from __future__ import annotations

import gc

from flask import Flask

from services.post_call.worker import start_workers


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
