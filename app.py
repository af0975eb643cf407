"""Entry point.

Production: `gunicorn -c gunicorn.conf.py app:app` (gunicorn's gevent worker).
Development: `python app.py` serves the same app on gevent's WSGI server, on `HOST` (0.0.0.0),
port `PORT` (5000).
"""
if __name__ == "__main__":
    # Must come before anything imports socket, ssl or threading.
    from gevent import monkey

    monkey.patch_all()

import logging
import os

from server import create_app

app = create_app()


def main() -> None:
    from server.dev_server import serve
    from server.serving import start_serving, stop_serving

    settings = app.config["SETTINGS"]
    if settings.is_sqlite:
        app.extensions["db"].upgrade()
    start_serving(app)
    port = int(os.environ.get("PORT", "5000"))
    # HOST is read by the settings too: the admin API without a token trusts a loopback bind only.
    logging.getLogger("server").info("serving on gevent WSGI", extra={"host": settings.host, "port": port})
    try:
        serve(app, settings.host, port)
    finally:
        stop_serving()


if __name__ == "__main__":
    main()
