"""Call writes off the audio path: batched, in order, and one bad write loses nothing else;
through database trouble, retried until they land, each stored once."""
import logging
import time

from sqlalchemy import text

from services import metrics
from services.store.db import Database
from services.store.models import Call, Job
from services.call_journal import CallJournal, JournalWriter
from tests.fakes.waiting import wait_for

LOG = logging.LoggerAdapter(logging.getLogger("store"), {"call_sid": "-"})


def _db(settings) -> Database:
    db = Database(settings.database_url)
    db.upgrade()
    with db.session() as session:
        session.add_all([Call(call_sid="CA-a"), Call(call_sid="CA-b")])
    return db


def test_writes_of_many_calls_land_in_order_and_a_failing_one_harms_none(settings):
    db = _db(settings)
    writer = JournalWriter(db)
    a, b = CallJournal(writer, "CA-a", LOG), CallJournal(writer, "CA-b", LOG)
    now = time.time()
    a.add_turn("caller", "שלום", now)

    def broken(session, call):
        raise RuntimeError("a bug in one write")

    writer.submit("CA-a", broken, LOG)
    b.add_turn("agent", "היי", now)
    a.add_turn("agent", "מה שלומך?", now + 1)
    b.finish("caller_hangup", now + 2, {"frames_in": 3}, {}, 0.0)
    a.close()
    b.close()
    with db.session() as session:
        rows = {c.call_sid: c for c in session.query(Call)}
        assert [t.text for t in rows["CA-a"].turns] == ["שלום", "מה שלומך?"]
        assert [t.text for t in rows["CA-b"].turns] == ["היי"]
        assert rows["CA-b"].end_reason == "caller_hangup" and rows["CA-b"].metrics == {"frames_in": 3}
    db.dispose()


def test_close_waits_for_the_calls_writes(settings):
    db = _db(settings)
    journal = CallJournal(JournalWriter(db), "CA-a", LOG)
    for i in range(50):
        journal.add_turn("caller", f"turn {i}", time.time())
    journal.close()
    with db.session() as session:
        assert len(session.query(Call).filter_by(call_sid="CA-a").one().turns) == 50
    db.dispose()


# --- database trouble ------------------------------------------------------------------


class Trouble:
    """Statements starting with `prefix` fail as if the connection to the database dropped, while
    `failing` (a count, or None for "until cleared"); `lost_commits` commits land and then report
    a lost connection anyway."""

    def __init__(self, db: Database, monkeypatch, prefix: str = "INSERT INTO turns"):
        self.prefix = prefix
        self.failing: int | None = 0
        self.failed = 0
        self.lost_commits = 0
        dialect = db.engine.dialect
        error = dialect.loaded_dbapi.OperationalError

        def failing(original):
            def execute(cursor, statement, parameters, context=None):
                if statement.lstrip().upper().startswith(self.prefix.upper()) and self.failing != 0:
                    self.failed += 1
                    if self.failing is not None:
                        self.failing -= 1
                    raise error("server closed the connection unexpectedly (injected)")
                return original(cursor, statement, parameters, context)
            return execute

        original_commit = dialect.do_commit

        def commit(dbapi_connection):
            original_commit(dbapi_connection)
            if self.lost_commits:
                self.lost_commits -= 1
                raise error("server closed the connection unexpectedly (injected, after COMMIT)")

        monkeypatch.setattr(dialect, "do_execute", failing(dialect.do_execute))
        monkeypatch.setattr(dialect, "do_executemany", failing(dialect.do_executemany))
        monkeypatch.setattr(dialect, "do_commit", commit)


def _sample(name: str, **labels) -> float:
    return metrics.REGISTRY.get_sample_value(name, labels or None) or 0.0


def _stored(db: Database, call_sid: str):
    with db.session() as session:
        call = session.query(Call).filter_by(call_sid=call_sid).one()
        jobs = session.query(Job).filter_by(call_id=call.id, kind="post_call").count()
        return call, [t.text for t in call.turns], jobs


def test_a_transaction_that_meets_database_trouble_is_retried_whole_and_stores_each_write_once(settings, monkeypatch):
    db = _db(settings)
    trouble = Trouble(db, monkeypatch)
    trouble.failing = 3
    retries = _sample("journal_retries_total")
    journal = CallJournal(JournalWriter(db), "CA-a", LOG)
    now = time.time()
    journal.stream_started("MZ-a", now, "test-host:1")
    for i in range(3):
        journal.add_turn("caller", f"turn {i}", now + i)
    journal.finish("caller_hangup", now + 5, {"frames_in": 1}, {}, 0.0)
    assert journal.close(timeout=10)
    call, turns, jobs = _stored(db, "CA-a")
    assert turns == ["turn 0", "turn 1", "turn 2"] and jobs == 1
    assert call.end_reason == "caller_hangup" and call.stream_sid == "MZ-a"
    assert trouble.failed == 3 and _sample("journal_retries_total") - retries == 3
    db.dispose()


def test_a_commit_that_landed_though_it_reported_a_lost_connection_doubles_nothing(settings, monkeypatch):
    db = _db(settings)
    trouble = Trouble(db, monkeypatch)
    trouble.lost_commits = 1
    dropped = _sample("journal_dropped_total", reason="failed")
    journal = CallJournal(JournalWriter(db), "CA-a", LOG)
    now = time.time()
    journal.stream_started("MZ-a", now, "test-host:1")
    journal.add_turn("caller", "שלום", now)
    journal.add_turn("agent", "היי", now + 1)
    journal.finish("caller_hangup", now + 2, {}, {}, 0.0)
    assert journal.close(timeout=10)
    assert trouble.lost_commits == 0
    _, turns, jobs = _stored(db, "CA-a")
    assert turns == ["שלום", "היי"] and jobs == 1
    # The retry skipped the turns already there rather than failing on them.
    assert _sample("journal_dropped_total", reason="failed") == dropped
    db.dispose()


def test_close_returns_after_its_bound_and_the_writer_stores_everything_once_the_database_is_back(settings,
                                                                                               monkeypatch):
    db = _db(settings)
    trouble = Trouble(db, monkeypatch, prefix="")  # every statement
    writer = JournalWriter(db)
    journal = CallJournal(writer, "CA-a", LOG)
    now = time.time()
    trouble.failing = None
    depth = _sample("journal_queue_depth")
    journal.stream_started("MZ-a", now, "test-host:1")
    journal.add_turn("caller", "שלום", now)
    journal.finish("agent_hangup", now + 1, {}, {}, 0.0)
    assert journal.close(timeout=0.3) is False
    assert _sample("journal_queue_depth") - depth == 3
    wait_for(lambda: trouble.failed >= 3, 5, message="the writer to keep retrying")
    trouble.failing = 0
    assert writer.flush("CA-a", timeout=10)
    call, turns, jobs = _stored(db, "CA-a")
    assert turns == ["שלום"] and jobs == 1 and call.end_reason == "agent_hangup"
    assert _sample("journal_queue_depth") == depth
    db.dispose()


def test_past_the_queue_cap_turns_are_dropped_and_counted_and_the_calls_end_is_kept(settings, monkeypatch):
    db = _db(settings)
    trouble = Trouble(db, monkeypatch, prefix="")
    trouble.failing = None
    dropped = _sample("journal_dropped_total", reason="queue_full")
    writer = JournalWriter(db, max_queued=3)
    journal = CallJournal(writer, "CA-a", LOG)
    now = time.time()
    journal.stream_started("MZ-a", now, "test-host:1")
    for i in range(5):
        journal.add_turn("caller", f"turn {i}", now + i)
    journal.finish("caller_hangup", now + 9, {}, {}, 0.0)
    assert _sample("journal_dropped_total", reason="queue_full") - dropped == 3
    trouble.failing = 0
    assert journal.close(timeout=10)
    call, turns, jobs = _stored(db, "CA-a")
    # The start took one place of three: two turns were kept, and the end beyond the cap.
    assert turns == ["turn 0", "turn 1"] and jobs == 1 and call.ended_at is not None
    db.dispose()


def test_an_end_whose_figures_the_database_refuses_is_stored_without_them_with_its_job(settings):
    db = _db(settings)
    dropped = _sample("journal_dropped_total", reason="failed")
    journal = CallJournal(JournalWriter(db), "CA-a", LOG)
    now = time.time()
    journal.add_turn("caller", "שלום", now)
    journal.finish("caller_goodbye", now + 1, {"not json": object()}, {}, 0.0)
    assert journal.close(timeout=10)
    call, turns, jobs = _stored(db, "CA-a")
    assert turns == ["שלום"] and jobs == 1
    assert call.end_reason == "caller_goodbye" and call.ended_at is not None and call.metrics == {}
    assert _sample("journal_dropped_total", reason="failed") == dropped
    db.dispose()


def test_the_rows_of_live_calls_are_stamped_until_their_end_is_stored(settings):
    db = _db(settings)
    writer = JournalWriter(db, heartbeat_s=0.05)
    journal = CallJournal(writer, "CA-a", LOG)
    journal.stream_started("MZ-a", time.time(), "test-host:1")
    assert journal.close(timeout=5) and writer.carrying("CA-a")
    first = _stored(db, "CA-a")[0].last_seen_at
    wait_for(lambda: _stored(db, "CA-a")[0].last_seen_at > first, 5, message="a newer stamp")
    # CA-b goes on: its stamps show the beats still running (one beat stamps every carried call).
    other = CallJournal(writer, "CA-b", LOG)
    other.stream_started("MZ-b", time.time(), "test-host:1")
    assert other.close(timeout=5)
    journal.finish("caller_hangup", time.time(), {}, {}, 0.0)
    assert journal.close(timeout=5) and not writer.carrying("CA-a")
    last = _stored(db, "CA-a")[0].last_seen_at
    for _ in range(2):  # two beats after the end was stored: neither stamped it
        seen = _stored(db, "CA-b")[0].last_seen_at
        wait_for(lambda: _stored(db, "CA-b")[0].last_seen_at > seen, 5, message="a beat stamping CA-b")
    assert _stored(db, "CA-a")[0].last_seen_at == last
    other.finish("caller_hangup", time.time(), {}, {}, 0.0)
    assert other.close(timeout=5)
    db.dispose()


def test_live_states_are_stored_by_one_statement_whatever_the_number_of_calls(settings):
    db = _db(settings)
    with db.session() as session:
        session.add(Call(call_sid="CA-c", live_state="greeting"))
    writer = JournalWriter(db)

    def states():
        with db.session() as session:
            return {c.call_sid: c.live_state for c in session.query(Call)}

    writer.note_state("CA-a", "listening")
    writer.note_state("CA-b", "speaking")
    wait_for(lambda: states() == {"CA-a": "listening", "CA-b": "speaking", "CA-c": "greeting"}, 10,
             message="two calls' states stored, the third call's left as it was")
    compiled = len(db.engine._compiled_cache)  # noqa: SLF001 - what a new shape of statement adds to
    for sid, state in (("CA-a", "speaking"), ("CA-b", "listening"), ("CA-c", "listening")):
        writer.note_state(sid, state)
    wait_for(lambda: states() == {"CA-a": "speaking", "CA-b": "listening", "CA-c": "listening"}, 10,
             message="three calls' states stored")
    assert len(db.engine._compiled_cache) == compiled  # noqa: SLF001
    db.dispose()


def test_a_write_the_database_cannot_run_is_dropped_not_retried_for_ever(settings):
    db = _db(settings)
    dropped = _sample("journal_dropped_total", reason="failed")
    retries = _sample("journal_retries_total")
    writer = JournalWriter(db)
    journal = CallJournal(writer, "CA-a", LOG)
    now = time.time()
    journal.add_turn("caller", "שלום", now)
    # SQLite calls this an OperationalError, as it does a locked database.
    writer.submit("CA-a", lambda session, call: session.execute(text("SELECT no_such_column FROM calls")), LOG)
    journal.add_turn("agent", "היי", now + 1)
    assert journal.close(timeout=5)
    assert _stored(db, "CA-a")[1] == ["שלום", "היי"]
    assert _sample("journal_dropped_total", reason="failed") - dropped == 1
    assert _sample("journal_retries_total") == retries
    db.dispose()
