"""gevent's own WSGI server, for `python app.py` and the tests."""
from __future__ import annotations

import logging
import signal
import socket

import gevent
from gevent.event import Event
from gevent.pywsgi import WSGIHandler, WSGIServer

from server.serving import shutdown_of


class _QuietHandler(WSGIHandler):
    def log_request(self) -> None:
        # Access lines go through our logging, at DEBUG: a call's media socket is one long request.
        logging.getLogger("http").debug(self.format_request())

    def handle_one_response(self) -> None:
        super().handle_one_response()
        if self._connection_upgrade_requested():
            # What follows a websocket on this connection is the stream's leftovers, not a request:
            # read as one, it was answered 400 into a socket the stream had already shut.
            self.close_connection = True


class NoDelayWSGIServer(WSGIServer):
    """Sets TCP_NODELAY on each accepted socket: Nagle would hold 20 ms frames up to 40 ms."""

    handler_class = _QuietHandler

    def handle(self, sock, address):
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
        super().handle(sock, address)


def make_server(app, host: str, port: int) -> NoDelayWSGIServer:
    return NoDelayWSGIServer((host, port), app, log=None, error_log=logging.getLogger("http"))


def serve(app, host: str, port: int) -> None:
    """Until SIGTERM or SIGINT, then stop as a gunicorn worker does (services/shutdown.py): no
    new connection, the drain, a goodbye for each call left. A second signal ends them at once."""
    server = make_server(app, host, port)
    server.start()
    signalled = Event()
    handlers = [gevent.signal_handler(signum, signalled.set) for signum in (signal.SIGTERM, signal.SIGINT)]
    signalled.wait()
    shutdown = shutdown_of(app)
    for handler in handlers:
        handler.cancel()
    handlers = [gevent.signal_handler(signum, shutdown.hurry) for signum in (signal.SIGTERM, signal.SIGINT)]
    server.close()
    shutdown.begin()
    shutdown.wait()
    for handler in handlers:
        handler.cancel()
    server.stop(timeout=1)
