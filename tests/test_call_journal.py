"""Call writes off the audio path: batched, in order, and one bad write loses nothing else."""
import logging
import time

from services.store.db import Database
from services.store.models import Call
from services.call_journal import CallJournal, JournalWriter

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
