"""Fixtures for the work after a call: a fake OpenAI REST API, a business's webhook receiver,
job workers, and calls ended through the real CallJournal."""
from __future__ import annotations

import dataclasses
import itertools
import time

import pytest
from sqlalchemy import select

from services.store.call_records import open_call
from services.logging_setup import call_logger
from services.store.models import Business, Call, Job, Lead
from services.settings import PostCall, Settings
from services.call_journal import CallJournal
from services.post_call.worker import JobWorker
from tests.conftest import CALLER_NUMBER, LiveServer, add_business
from tests.fakes.openai_rest import FakeOpenAI
from tests.fakes.waiting import wait_for
from tests.fakes.webhook_receiver import WebhookReceiver

# Production rules with the waits shortened.
TEST_POST_CALL = PostCall(workers=2, poll_s=0.05, lease_s=10.0, backoff_s=0.05, backoff_max_s=0.2,
                          request_timeout_s=5.0, webhook_timeout_s=2.0, recording_wait_s=3.0,
                          recording_recheck_s=0.1)
WEBHOOK_SECRET = "whsec_test_secret_0123456789"
_sids = itertools.count(1)


@dataclasses.dataclass
class World:
    live: LiveServer
    openai: FakeOpenAI
    receiver: WebhookReceiver
    business_id: int
    workers: list[JobWorker]

    def start_worker(self, count: int = 2, **changes) -> JobWorker:
        settings = self.live.settings.replace(post_call=dataclasses.replace(self.live.settings.post_call, **changes))
        worker = JobWorker(self.live.db, settings, count).start()
        self.workers.append(worker)
        return worker

    def end_call(self, turns: list[tuple[str, str]], *, end_reason: str = "caller_hangup",
                 caller: str = CALLER_NUMBER, call_sid: str | None = None) -> str:
        """A call that ran and ended, written by the call's own journal (turns, end, and its job)."""
        call_sid = call_sid or f"CApost{next(_sids):028d}"
        with self.live.db.session() as session:
            business = session.get(Business, self.business_id)
            open_call(session, call_sid=call_sid, business=business, direction="inbound", from_number=caller,
                      to_number="+972300000001", status="in-progress")
        journal = CallJournal(self.live.app.extensions["journal"], call_sid, call_logger("store", call_sid))
        start = time.time() - len(turns) - 1  # the call ends now
        journal.stream_started("MZ" + call_sid[2:], start, "test-host:1")
        for i, (speaker, text) in enumerate(turns):
            journal.add_turn(speaker, text, start + 1 + i)
        journal.finish(end_reason, start + len(turns) + 1, {}, {}, 0.0)
        journal.close()
        return call_sid

    def call(self, call_sid: str) -> Call:
        with self.live.db.session() as session:
            call = session.scalar(select(Call).where(Call.call_sid == call_sid))
            session.expunge(call)
            return call

    def jobs(self, call_sid: str, kind: str | None = None) -> list[Job]:
        with self.live.db.session() as session:
            stmt = select(Job).join(Call, Call.id == Job.call_id).where(Call.call_sid == call_sid).order_by(Job.id)
            rows = [j for j in session.scalars(stmt) if kind is None or j.kind == kind]
            session.expunge_all()
            return rows

    def wait_processed(self, call_sid: str, timeout: float = 8.0) -> Call:
        def done():
            job = self.jobs(call_sid, "post_call")
            return job and job[0].status == "done"

        wait_for(done, timeout, message=f"the post-call job of {call_sid} to be done")
        return self.call(call_sid)

    def leads(self) -> list[Lead]:
        with self.live.db.session() as session:
            rows = list(session.scalars(select(Lead).where(Lead.business_id == self.business_id).order_by(Lead.id)))
            session.expunge_all()
            return rows


@pytest.fixture
def make_world(make_live_server, settings: Settings):
    made: list[World] = []

    def make(*, webhook: bool = True, settings_changes: dict | None = None, **business_fields) -> World:
        openai = FakeOpenAI().start()
        receiver = WebhookReceiver(WEBHOOK_SECRET).start()
        # The receiver is plain http on loopback: the test settings open both, a test may close them.
        live = make_live_server(settings.replace(**{"openai_base_url": openai.base_url, "post_call": TEST_POST_CALL,
                                                    "webhook_allow_http": True, "webhook_allow_private": True,
                                                    **(settings_changes or {})}))
        if webhook:
            business_fields.setdefault("webhook_url", receiver.url)
            business_fields.setdefault("webhook_secret", WEBHOOK_SECRET)
        world = World(live, openai, receiver, add_business(live, **business_fields), [])
        made.append(world)
        return world

    yield make
    for world in made:
        for worker in world.workers:
            worker.stop()
        world.openai.stop()
        world.receiver.stop()


@pytest.fixture
def world(make_world) -> World:
    return make_world()


@pytest.fixture
def fake_openai():
    fake = FakeOpenAI().start()
    yield fake
    fake.stop()
