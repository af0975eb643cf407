"""A whole call's world on loopback: our server, a fake Realtime API, fake Twilio callers."""
from __future__ import annotations

import dataclasses
import itertools

import pytest
import requests

from services.store.models import Call
from services.settings import CallTiming
from tests.conftest import BUSINESS_NUMBER, CALLER_NUMBER, LiveServer, add_business
from tests.fakes.realtime_server import FakeRealtime, RealtimeScript
from tests.fakes.twilio_caller import FakeTwilioCall, PlacedCall, place_call
from tests.fakes.waiting import wait_for

# Production rules, with the session.update waits shortened so failures show quickly.
TEST_TIMING = CallTiming(session_update_retry_s=0.6, session_update_timeout_s=1.5)
_sids = itertools.count(1)


@dataclasses.dataclass
class StoredCall:
    row: Call
    turns: list[tuple[str, str, bool]]  # (speaker, text, interrupted)


class Harness:
    def __init__(self, live: LiveServer, fake: FakeRealtime, business_id: int):
        self.live = live
        self.fake = fake
        self.business_id = business_id
        self.callers: list[FakeTwilioCall] = []

    def place(self, call_sid: str | None = None, to: str = BUSINESS_NUMBER) -> tuple[str, PlacedCall]:
        call_sid = call_sid or f"CA{next(_sids):032d}"
        return call_sid, place_call(self.live.base_url, call_sid, CALLER_NUMBER, to)

    def call(self, call_sid: str | None = None, **kwargs) -> FakeTwilioCall:
        """Place an inbound call and open its media stream as Twilio would."""
        call_sid, placed = self.place(call_sid)
        assert placed.stream_url, placed.twiml
        caller = FakeTwilioCall(self.live.media_url, call_sid, placed.parameters, **kwargs).start()
        self.callers.append(caller)
        return caller

    def stored(self, call_sid: str) -> StoredCall:
        with self.live.db.session() as session:
            row = session.query(Call).filter_by(call_sid=call_sid).one()
            turns = [(t.speaker, t.text, t.interrupted) for t in row.turns]
            session.expunge(row)
        return StoredCall(row, turns)

    def wait_ended(self, call_sid: str, timeout: float = 5.0) -> StoredCall:
        """Until the call row says it ended (the session writes it before closing the stream)."""
        wait_for(lambda: self.stored(call_sid).row.ended_at is not None, timeout, message=f"{call_sid} to end")
        return self.stored(call_sid)

    def stream_ended(self, call_sid: str) -> PlacedCall:
        from tests.fakes.twilio_caller import parse_twiml

        response = requests.post(f"{self.live.base_url}/webhook/stream_ended", data={"CallSid": call_sid}, timeout=5)
        return parse_twiml(response.status_code, response.text)


@pytest.fixture
def make_harness(make_live_server, settings):
    fakes: list[FakeRealtime] = []
    harnesses: list[Harness] = []

    def make(script: RealtimeScript | None = None, realtime_url: str | None = None, *,
             timing: CallTiming = TEST_TIMING, business: dict | None = None, **settings_changes) -> Harness:
        """`business`: fields of the test business beyond the defaults (add_business)."""
        fake = FakeRealtime(script or RealtimeScript()).start()
        fakes.append(fake)
        live = make_live_server(dataclasses.replace(
            settings, openai_realtime_url=realtime_url or fake.url, timing=timing, **settings_changes))
        harness = Harness(live, fake, add_business(live, **(business or {})))
        harnesses.append(harness)
        return harness

    yield make
    for harness in harnesses:
        for caller in harness.callers:
            caller.stop(timeout=1)
    for fake in fakes:
        fake.stop()


@pytest.fixture
def harness(make_harness) -> Harness:
    return make_harness()
