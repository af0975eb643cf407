"""Run post-call job workers alone, without the web server: `python -m services.post_call`.

Configured from the environment like the server (DATABASE_URL, OPENAI_*, POST_CALL_WORKERS,
JOB_*). Stops on SIGTERM or SIGINT, handing back the jobs it was running.
"""
if __name__ == "__main__":  # patch before anything imports socket; importing the module patches nothing
    from gevent import monkey

    monkey.patch_all()

import logging  # noqa: E402
import signal  # noqa: E402

import gevent  # noqa: E402
from gevent.event import Event  # noqa: E402

from services.store.db import Database  # noqa: E402
from services.logging_setup import configure_logging  # noqa: E402
from services.settings import Settings  # noqa: E402
from services.post_call.worker import JobWorker  # noqa: E402


def main() -> None:
    settings = Settings.from_env()
    configure_logging(settings.log_level, settings.log_levels)
    db = Database(settings.database_url)
    worker = JobWorker(db, settings).start()
    stop = Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        gevent.signal_handler(signum, stop.set)
    stop.wait()
    logging.getLogger("jobs").info("job workers stopping")
    worker.stop()
    db.dispose()


if __name__ == "__main__":
    main()
