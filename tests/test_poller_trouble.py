"""A poller's failed reads: database trouble logged once a spell, its own failures every time."""
import logging

from sqlalchemy import exc as sa_exc

from services.call_journal import PollerTrouble

log = logging.getLogger("pollers")


def _fail(trouble: PollerTrouble, error: Exception) -> None:
    try:
        raise error
    except Exception as exc:
        trouble.failed(exc)


def test_trouble_is_logged_once_a_spell_and_a_bug_every_time(caplog):
    trouble = PollerTrouble(log, "live calls")
    locked = sa_exc.OperationalError("SELECT 1", {}, Exception("database is locked"))
    with caplog.at_level(logging.WARNING, logger="pollers"):
        _fail(trouble, locked)
        _fail(trouble, locked)  # the same spell: nothing more
        _fail(trouble, ValueError("a bug"))
        _fail(trouble, ValueError("a bug"))
        trouble.looked()  # the spell is over: the next one is told again
        _fail(trouble, locked)
    said = [(r.levelname, r.getMessage(), r.exc_info is not None) for r in caplog.records]
    assert said == [("WARNING", "live calls: database trouble, looking again later", False),
                    ("ERROR", "live calls: the look failed", True),
                    ("ERROR", "live calls: the look failed", True),
                    ("WARNING", "live calls: database trouble, looking again later", False)]
    assert caplog.records[0].error == "(builtins.Exception) database is locked"
