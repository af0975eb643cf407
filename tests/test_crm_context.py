"""The caller's CRM facts: looked up from the real database, never allowed to hold up or break a call."""
import logging
import time
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import gevent
import gevent.event
import pytest

from prompts import CrmFacts
from services.store.models import Appointment, Business, Call, Lead
from services.crm_context import CRM_WAIT_BOUND_S, CallCrmContext, load_crm_facts

CALLER = "+972501234567"
OTHER = "+972529999999"
JERUSALEM = ZoneInfo("Asia/Jerusalem")  # the business's zone by default


@pytest.fixture
def business_id(db) -> int:
    with db.session() as session:
        business = Business(name="מספרת הבדיקה", business_prompt="", greeting="")
        session.add(business)
        session.flush()
        return business.id


def add_call(db, business_id, sid, *, started_at, status="completed", ended=True, from_number=CALLER,
             to_number="+972300000001", direction="inbound"):
    with db.session() as session:
        session.add(Call(call_sid=sid, business_id=business_id, direction=direction, from_number=from_number,
                         to_number=to_number, status=status, started_at=started_at,
                         ended_at=started_at + timedelta(minutes=2) if ended else None))


def wait_until(predicate, timeout_s=3.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value is not None:
            return value
        gevent.sleep(0.02)
    return None


# load_crm_facts

def test_unknown_caller_has_no_facts(db, business_id):
    with db.session() as session:
        assert load_crm_facts(session, business_id, CALLER) is None
        assert load_crm_facts(session, business_id, "") is None


def test_lead_and_last_finished_call_are_found(db, business_id):
    earlier = datetime(2025, 1, 10, 9, tzinfo=timezone.utc)
    latest = datetime(2025, 2, 20, 9, tzinfo=timezone.utc)
    with db.session() as session:
        session.add(Lead(business_id=business_id, phone=CALLER, name="דנה", gender="female", notes="מעדיפה בוקר."))
    add_call(db, business_id, "CA1", started_at=earlier)
    add_call(db, business_id, "CA2", started_at=latest, direction="outbound", from_number="+972300000001",
             to_number=CALLER)
    add_call(db, business_id, "CA3", started_at=latest + timedelta(days=1), status="no-answer")
    add_call(db, business_id, "CA4", started_at=datetime.now(timezone.utc), status="in-progress", ended=False)
    add_call(db, business_id, "CA5", started_at=latest + timedelta(days=2), from_number=OTHER)
    with db.session() as session:
        facts = load_crm_facts(session, business_id, CALLER)
    assert facts == CrmFacts(name="דנה", gender="female", last_call_at=latest, open_appointment=None,
                             notes="מעדיפה בוקר.", zone=JERUSALEM)


def test_another_business_lead_is_not_this_callers_data(db, business_id):
    with db.session() as session:
        other = Business(name="עסק אחר")
        session.add(other)
        session.flush()
        session.add(Lead(business_id=other.id, phone=CALLER, name="יוסי"))
    with db.session() as session:
        assert load_crm_facts(session, business_id, CALLER) is None


def test_caller_with_past_calls_but_no_lead(db, business_id):
    at = datetime(2025, 2, 1, 12, tzinfo=timezone.utc)
    add_call(db, business_id, "CA1", started_at=at)
    with db.session() as session:
        assert load_crm_facts(session, business_id, CALLER) == CrmFacts(last_call_at=at, zone=JERUSALEM)


def test_next_appointment_in_the_businesss_own_zone_and_no_other_callers(db, business_id):
    soon = datetime.now(timezone.utc).replace(microsecond=0) + timedelta(days=3)
    later, past = soon + timedelta(days=7), soon - timedelta(days=30)
    with db.session() as session:
        session.get(Business, business_id).timezone = "America/New_York"
        for starts_at, phone in ((later, CALLER), (past, CALLER), (soon - timedelta(days=1), OTHER), (soon, CALLER)):
            session.add(Appointment(business_id=business_id, starts_at=starts_at, ends_at=starts_at + timedelta(hours=1),
                                    name="דנה", phone=phone))
    with db.session() as session:
        facts = load_crm_facts(session, business_id, CALLER)
    local = soon.astimezone(ZoneInfo("America/New_York"))
    assert facts.name is None and facts.last_call_at is None and facts.zone == ZoneInfo("America/New_York")
    assert facts.open_appointment.endswith(f"{local:%Y-%m-%d %H:%M}")
    assert facts.open_appointment != f"{soon.astimezone(JERUSALEM):%Y-%m-%d %H:%M}"


def test_a_business_that_is_gone_has_no_facts(db):
    with db.session() as session:
        assert load_crm_facts(session, 999_999, CALLER) is None


# CallCrmContext

def test_facts_known_before_the_bound(db, business_id):
    with db.session() as session:
        session.add(Lead(business_id=business_id, phone=CALLER, name="אבי", gender="male"))
    context = CallCrmContext(db, business_id, CALLER).start()
    facts = context.wait()
    assert facts is not None and facts.name == "אבי" and facts.gender == "male"
    assert not context.may_have_late_facts()  # handed out: the greeting need not wait for any
    assert context.late_facts() is None


def test_nothing_known_is_none_and_not_late(db, business_id):
    context = CallCrmContext(db, business_id, CALLER).start()
    assert context.wait(1.0) is None
    assert not context.may_have_late_facts()
    assert context.late_facts() is None


def test_slow_lookup_respects_the_bound_then_hands_facts_over_once(db, business_id):
    late = CrmFacts(name="רונית")
    release = gevent.event.Event()

    def slow_loader(session, business_id, phone):
        release.wait(10)  # bounded: a wait() that ignored its bound would get the facts, not hang
        return late

    context = CallCrmContext(db, business_id, CALLER, loader=slow_loader).start()
    assert context.wait(0.1) is None  # returned while the lookup still runs
    assert context.may_have_late_facts()  # the call's greeting then waits for the confirmation
    assert context.late_facts() is None  # not there yet
    release.set()
    assert wait_until(context.late_facts) == late
    assert context.late_facts() is None
    assert not context.may_have_late_facts()


def test_default_bound_is_the_documented_constant_and_close_stops_the_lookup(db, business_id):
    assert CRM_WAIT_BOUND_S == 0.3
    release, killed = gevent.event.Event(), gevent.event.Event()

    def hanging_loader(session, business_id, phone):
        try:
            release.wait(10)
        except gevent.GreenletExit:
            killed.set()
            raise
        return CrmFacts(name="מאוחר מדי")

    context = CallCrmContext(db, business_id, CALLER, loader=hanging_loader).start()
    started = time.monotonic()
    assert context.wait() is None
    assert time.monotonic() - started >= CRM_WAIT_BOUND_S - 0.05
    context.close()
    assert killed.wait(5), "close() stopped the lookup"
    release.set()  # a lookup close() had missed would hand its facts over now
    gevent.sleep(0)
    assert context.late_facts() is None


def test_failing_lookup_gives_none_and_is_logged(db, business_id, caplog):
    caplog.set_level(logging.WARNING, logger="crm")

    def broken_loader(session, business_id, phone):
        raise RuntimeError("database is gone")

    context = CallCrmContext(db, business_id, CALLER, loader=broken_loader, call_sid="CA123").start()
    assert context.wait(1.0) is None
    assert context.late_facts() is None
    records = [r for r in caplog.records if r.name == "crm" and r.levelno == logging.WARNING]
    assert records and records[0].exc_info and "database is gone" in str(records[0].exc_info[1])
    assert records[0].call_sid == "CA123"


def test_failing_slow_lookup_never_reaches_the_call(db, business_id, caplog):
    caplog.set_level(logging.WARNING, logger="crm")
    release = gevent.event.Event()

    def late_broken_loader(session, business_id, phone):
        release.wait(10)
        raise RuntimeError("timeout")

    context = CallCrmContext(db, business_id, CALLER, loader=late_broken_loader).start()
    assert context.wait(0.05) is None
    release.set()
    # The failure is logged as the lookup ends: from then on the context has settled.
    assert wait_until(lambda: next((r for r in caplog.records if r.name == "crm" and "lookup failed"
                                    in r.getMessage()), None)), "the late failure to be logged"
    assert context.late_facts() is None


def test_wait_starts_the_lookup_if_needed(db, business_id):
    context = CallCrmContext(db, business_id, CALLER, loader=lambda s, b, p: CrmFacts(name="מיכל"))
    assert context.wait(1.0) == CrmFacts(name="מיכל")
