"""The call path's warm-up at a worker's start: it runs the call's own functions, writes nothing,
and a failure only costs time."""
import logging

from sqlalchemy import func, select

from services.call_warm_up import warm_up_call_path
from services.store.db import Database
from services.store.models import Business, Call, Lead, Turn


def _counts(db):
    with db.session() as session:
        return {model.__name__: session.scalar(select(func.count()).select_from(model))
                for model in (Business, Call, Lead, Turn)}


def test_with_no_business_yet_it_warms_what_it_can(db, settings):
    assert warm_up_call_path(db, settings) is None
    assert _counts(db)["Business"] == 0


def test_it_runs_the_first_business_through_the_call_path_and_writes_nothing(db, settings):
    with db.session() as session:
        first = Business(name="מספרת הבדיקה", business_prompt="תספורות וצבע.", greeting="שלום, כאן המספרה.")
        session.add_all([first, Business(name="עסק שני")])
        session.flush()
        first_id = first.id
    before = _counts(db)
    assert warm_up_call_path(db, settings) == first_id
    assert _counts(db) == before


def test_a_database_it_cannot_read_is_logged_not_raised(tmp_path, settings, caplog):
    broken = Database(f"sqlite:///{tmp_path / 'missing-folder' / 'calls.db'}")
    with caplog.at_level(logging.WARNING, logger="server"):
        assert warm_up_call_path(broken, settings) is None
    assert any("warm-up failed" in record.getMessage() for record in caplog.records)
    broken.dispose()
