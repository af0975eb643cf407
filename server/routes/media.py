"""The Twilio Media Streams websocket."""
from __future__ import annotations

from flask import Flask
from flask_sock import Sock

sock = Sock()


def init_app(app: Flask) -> None:
    sock.init_app(app)
