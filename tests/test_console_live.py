"""The console's live calls: the SSE stream fed from stored turns, one poll per interval for every
viewer, a business's own calls only, and End call carried out by the process that holds the call."""
from __future__ import annotations

import json
import time

import gevent
import pytest
import requests
from sqlalchemy import event, select

from services.live_feed import LiveFeed
from services.store.db import Database
from services.store.end_reasons import EndReason
from services.store.models import AuditEntry, Call
from tests.conftest import BUSINESS_NUMBER, CALLER_NUMBER, add_business
from tests.console_client import ADMIN_TOKEN, ConsoleClient, business_key, texts_of
from tests.fakes.realtime_server import FakeRealtime, RealtimeScript, Reply
from tests.fakes.twilio_caller import FakeTwilioCall, place_call
from tests.fakes.waiting import wait_for
from tests.gunicorn_proc import running_gunicorn

GREETING = Reply("שלום, הגעתם למספרת הבדיקה, איך אפשר לעזור?", 1500)
# Long enough that a look every second catches the agent speaking, on a loaded machine too.
ANSWER = Reply("בשמחה, לאיזה יום תרצו לקבוע?", 4000)
GOODBYE = Reply("תודה שהתקשרתם, להתראות", 1200)
OTHER_NUMBER = "+972300000002"


class LiveStream:
    """/console/live/events read as a browser's EventSource would, in a greenlet of its own; the
    live calls as the events leave them (`calls`), and every state each call was seen in."""

    def __init__(self, client: ConsoleClient):
        self.response = client.http.get(client.base_url + "/console/live/events", stream=True, timeout=(5, 120))
        assert self.response.status_code == 200, self.response.status_code
        assert self.response.headers["Content-Type"].startswith("text/event-stream")
        self.events: list[tuple[str, dict]] = []
        self.comments: list[str] = []
        self.calls: dict[str, dict] = {}
        self.states: dict[str, list[str]] = {}
        self.ended: list[str] = []
        self.finished = False
        self._greenlet = gevent.spawn(self._read)

    def _read(self) -> None:
        buffer = ""
        try:
            for chunk in self.response.iter_content(chunk_size=None):
                buffer += chunk.decode()
                while "\n\n" in buffer:
                    block, buffer = buffer.split("\n\n", 1)
                    self._block(block)
        except (requests.RequestException, OSError):
            pass  # the server closed it
        finally:
            self.finished = True

    def _block(self, block: str) -> None:
        name, data = None, []
        for line in block.split("\n"):
            if line.startswith(":"):
                self.comments.append(line[1:].strip())
            elif line.startswith("event: "):
                name = line[len("event: "):]
            elif line.startswith("data: "):
                data.append(line[len("data: "):])
        if name is None:
            return
        payload = json.loads("\n".join(data))
        self.events.append((name, payload))
        if name == "snapshot":
            self.calls = {}
        for call in payload["calls"]:
            known = self.calls.setdefault(call["call_sid"], {**call, "turns": []})
            ids = {turn["id"] for turn in known["turns"]}
            turns = known["turns"] + [turn for turn in call["turns"] if turn["id"] not in ids]
            self.calls[call["call_sid"]] = {**call, "turns": turns}
            seen = self.states.setdefault(call["call_sid"], [])
            if not seen or seen[-1] != call["state"]:
                seen.append(call["state"])
        for sid in payload["ended"]:
            self.calls.pop(sid, None)
            self.ended.append(sid)

    def said(self, call_sid: str) -> list[tuple[str, str]]:
        call = self.calls.get(call_sid)
        return [(turn["speaker"], turn["text"]) for turn in call["turns"]] if call else []

    def close(self) -> None:
        """The browser goes away: the reader stops, then the connection closes."""
        self._greenlet.kill(timeout=5)
        self.response.close()


def signed_in(base_url: str, secret: str = ADMIN_TOKEN) -> ConsoleClient:
    client = ConsoleClient(base_url)
    assert client.sign_in(secret).status_code == 302
    return client


@pytest.fixture
def streams():
    opened: list[LiveStream] = []

    def open_(client: ConsoleClient) -> LiveStream:
        stream = LiveStream(client)
        opened.append(stream)
        return stream

    yield open_
    for stream in opened:
        stream.close()


def live_feed_queries(db: Database) -> list[float]:
    """The live feed's looks at the database, as they happen (its one statement joins turns to
    the live calls): observed with an event listener, nothing patched."""

    seen: list[float] = []

    def count(conn, cursor, statement, parameters, context, executemany):
        if "LEFT OUTER JOIN turns" in statement:
            seen.append(time.monotonic())

    event.listen(db.engine, "before_cursor_execute", count)
    return seen


def test_the_stream_delivers_a_live_calls_turns_as_they_are_stored_and_its_state(make_harness, streams):
    harness = make_harness(RealtimeScript(responses=[GREETING, ANSWER]), admin_api_token=ADMIN_TOKEN)
    client = signed_in(harness.live.base_url)
    stream = streams(client)
    wait_for(lambda: stream.events, 10, message="the first event")
    assert stream.events[0] == ("snapshot", {**stream.events[0][1], "calls": [], "ended": []})
    assert "live calls" in stream.comments  # written at once: proxies and browsers see the stream open

    caller = harness.call()
    sid = caller.call_sid
    wait_for(lambda: sid in stream.calls, 10, message="the call on the stream")
    assert stream.calls[sid]["direction"] == "inbound" and stream.calls[sid]["number"] == CALLER_NUMBER
    caller.wait_heard(GREETING.audio_ms, timeout=10)
    wait_for(lambda: stream.said(sid) == [("agent", GREETING.text)], 10, message="the greeting's turn")
    wait_for(lambda: stream.calls[sid]["state"] == "listening", 10, message="the call listening")
    assert stream.states[sid][0] == "greeting"

    caller.speak(700)
    wait_for(lambda: stream.calls[sid]["state"] == "speaking", 10, message="the agent speaking")
    caller.wait_heard(GREETING.audio_ms + ANSWER.audio_ms, timeout=15)
    wait_for(lambda: stream.said(sid) == [("agent", GREETING.text), ("caller", "שלום"), ("agent", ANSWER.text)],
             10, message="the caller's turn and the answer")
    wait_for(lambda: stream.calls[sid]["state"] == "listening", 10, message="listening again")
    assert stream.states[sid] == ["greeting", "listening", "speaking", "listening"]

    # The page, server-rendered, shows the same call and transcript.
    page = client.get("/console/live").text
    assert texts_of(page, r'<article class="card live-call" data-call-sid="([^"]+)"') == [sid]
    assert texts_of(page, r'<span class="said">([^<]*)</span>') == [GREETING.text, "שלום", ANSWER.text]
    assert 'lang="he" dir="rtl"' in page and 'id="nav-live"' in page

    caller.stop()
    harness.wait_ended(sid, timeout=10)
    wait_for(lambda: sid in stream.ended, 10, message="the call's end on the stream")
    assert sid not in stream.calls


def test_one_look_per_interval_however_many_viewers_and_none_without_them(make_harness, streams):
    harness = make_harness(RealtimeScript(responses=[GREETING]), admin_api_token=ADMIN_TOKEN)
    live = harness.live
    interval_s, heartbeat_s = 0.5, 1.0
    # A feed of the process's own, with a short heartbeat: a viewer that left is noticed at the
    # next write, and the test should not wait production's 15 s for it.
    live.app.extensions["live_feed"] = LiveFeed(live.db, interval_s=interval_s, heartbeat_s=heartbeat_s)
    looks = live_feed_queries(live.db)
    caller = harness.call()
    caller.wait_heard(GREETING.audio_ms, timeout=10)

    viewers = [streams(signed_in(live.base_url)) for _ in range(6)]
    for viewer in viewers:
        wait_for(lambda: caller.call_sid in viewer.calls, 10, message="every viewer to see the call")
    wait_for(lambda: all(len(v.comments) >= 2 for v in viewers), 10, message="a heartbeat on every stream")
    assert all("heartbeat" in v.comments for v in viewers)

    first, window_s = len(looks), 4.0
    time.sleep(window_s)
    counted = len(looks) - first
    # Six viewers, one look per interval: at most the interval's count (and a little for the
    # edges), where a look per viewer would make six times as many.
    assert 1 <= counted <= window_s / interval_s + 2, counted

    for viewer in viewers:
        viewer.close()
    wait_for(lambda: live.app.extensions["live_feed"].viewers == 0, 10 * heartbeat_s,
             message="the feed to notice its viewers left")
    time.sleep(interval_s * 2)  # the poller's last sleep
    stopped_at = len(looks)
    time.sleep(interval_s * 4)
    assert len(looks) == stopped_at, "the poller went on looking without viewers"

    # A viewer again: the poller starts again.
    again = streams(signed_in(live.base_url))
    wait_for(lambda: caller.call_sid in again.calls, 10, message="the call seen by a new viewer")
    assert len(looks) > stopped_at


def test_a_business_key_sees_and_ends_only_its_own_calls(make_harness, streams):
    harness = make_harness(RealtimeScript(responses=[GREETING]), admin_api_token=ADMIN_TOKEN)
    live = harness.live
    other_id = add_business(live, number=OTHER_NUMBER, name="עסק אחר")
    mine = harness.call()
    sid_other, placed = harness.place(to=OTHER_NUMBER)
    theirs = FakeTwilioCall(live.media_url, sid_other, placed.parameters).start()
    harness.callers.append(theirs)
    for caller in (mine, theirs):
        caller.wait_heard(GREETING.audio_ms, timeout=10)

    assert ConsoleClient(live.base_url).get("/console/live/events").status_code == 302  # signed in only

    admin = streams(signed_in(live.base_url))
    wait_for(lambda: set(admin.calls) == {mine.call_sid, sid_other}, 10, message="the admin to see both calls")
    client = signed_in(live.base_url, business_key(live, harness.business_id))
    own = streams(client)
    wait_for(lambda: mine.call_sid in own.calls, 10, message="the business's own call")
    wait_for(lambda: len(own.said(mine.call_sid)) == 1 and len(admin.said(sid_other)) == 1, 10,
             message="the greetings' turns")
    assert set(own.calls) == {mine.call_sid}
    assert all(call["business_id"] == harness.business_id for _, p in own.events for call in p["calls"])
    page = client.get("/console/live").text
    assert texts_of(page, r'<article class="card live-call" data-call-sid="([^"]+)"') == [mine.call_sid]

    # Another business's call: as not there, and nothing is asked of it.
    refused = client.post(f"/console/live/{sid_other}/end", csrf_from="/console/live")
    assert refused.status_code == 404
    with live.db.session() as session:
        assert session.scalar(select(Call.end_requested_at).where(Call.call_sid == sid_other)) is None
        assert session.scalar(select(Call.business_id).where(Call.call_sid == sid_other)) == other_id

    # Without the form's CSRF token: refused, and the call goes on.
    no_token = client.post(f"/console/live/{mine.call_sid}/end", csrf_from=None)
    assert no_token.status_code == 400 and "אסימון אבטחה" in no_token.text
    forged = client.post(f"/console/live/{mine.call_sid}/end", {"csrf_token": "forged"}, csrf_from=None)
    assert forged.status_code == 400
    gevent.sleep(2.5)  # beyond two looks of the process's end-request watch
    with live.db.session() as session:
        row = session.scalar(select(Call).where(Call.call_sid == mine.call_sid))
        assert row.end_requested_at is None and row.ended_at is None
        assert session.scalar(select(AuditEntry.id)) is None
    assert not mine.closed and not theirs.closed


@pytest.fixture
def two_servers(tmp_path, database_url):
    """Two gunicorns (two hosts) on one database, as behind a load balancer."""
    db = Database(database_url)
    db.upgrade()
    fake = FakeRealtime(RealtimeScript(responses=[GREETING, GOODBYE])).start()
    env = {"DATABASE_URL": database_url, "OPENAI_REALTIME_URL": fake.url, "OPENAI_API_KEY": "sk-live",
           "SECRET_KEY": "one-secret-for-both", "ADMIN_API_TOKEN": ADMIN_TOKEN, "POST_CALL_WORKERS": "0",
           "CALL_SILENCE_S": "120"}  # a silent caller: no "are you still there?" during the test
    try:
        with running_gunicorn(tmp_path, env, name="host-a") as host_a:
            with running_gunicorn(tmp_path, env, name="host-b") as host_b:
                yield host_a, host_b, db, fake
    finally:
        fake.stop()
        db.dispose()


def test_end_call_on_one_host_ends_the_call_held_by_another_after_its_goodbye(two_servers):
    host_a, host_b, db, fake = two_servers
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    created = requests.post(f"{host_a.base_url}/api/businesses", headers=headers, timeout=10,
                            json={"name": "מספרה בשני שרתים", "phone_numbers": [BUSINESS_NUMBER]})
    assert created.status_code == 201, created.text
    sid = "CAliveend1"
    placed = place_call(host_b.base_url, sid, CALLER_NUMBER, BUSINESS_NUMBER)
    caller = FakeTwilioCall(host_b.media_url, sid, placed.parameters).start()  # the call lives on host B
    try:
        caller.wait_heard(GREETING.audio_ms, timeout=15)
        caller.wait_quiet(100)
        # Host A shows it, from the database, and takes the click.
        client = signed_in(host_a.base_url)
        stream = LiveStream(client)
        try:
            wait_for(lambda: stream.said(sid) == [("agent", GREETING.text)], 15, message="host A to show the call")
            # Only host B's one worker carries the call.
            assert requests.get(f"{host_a.base_url}/healthz", timeout=5).json()["active_calls"] == 0
            answer = client.post(f"/console/live/{sid}/end", csrf_from="/console/live")
            assert answer.status_code == 303 and answer.headers["Location"].endswith("/console/live")
            wait_for(lambda: stream.calls.get(sid, {}).get("end_requested"), 15, message="the request shown")
            caller.wait_closed(timeout=20)
            wait_for(lambda: sid in stream.ended, 15, message="the end on host A's stream")
        finally:
            stream.close()
    finally:
        caller.stop(timeout=1)

    # The goodbye was heard to its end, then the line closed cleanly.
    assert caller.closed_by_server and caller.close_code == 1000
    assert caller.heard_ms >= GREETING.audio_ms + GOODBYE.audio_ms
    assert caller.unplayed_at_close_ms == 0
    (connection,) = fake.connections
    notices = [item for item in connection.items_created if item.get("role") == "system"]
    assert any("goodbye" in part.get("text", "") for item in notices for part in item["content"])
    assert connection.responses[-1].transcript == GOODBYE.text

    def ended():
        with db.session() as session:
            row = session.scalar(select(Call).where(Call.call_sid == sid))
            session.expunge_all()
            return row if row.ended_at is not None else None

    row = wait_for(ended, 15, message="the call row's end")
    assert row.end_reason == EndReason.ENDED_FROM_CONSOLE and row.end_requested_at is not None
    assert row.served_by.endswith(f":{host_b.worker_pids()[0]}")
    with db.session() as session:
        agent_said = [t.text for t in session.scalar(select(Call).where(Call.call_sid == sid)).turns
                      if t.speaker == "agent"]
        (entry,) = session.scalars(select(AuditEntry).where(AuditEntry.object_type == "call")).all()
        assert agent_said == [GREETING.text, GOODBYE.text]
        assert (entry.actor, entry.method, entry.route, entry.object_type, entry.object_id, entry.fields) == (
            "admin", "POST", "/console/live/<call_sid>/end", "call", sid, ["end_requested_at"])
    for host in (host_a, host_b):
        assert "Traceback" not in host.log() and "level=ERROR" not in host.log()
    assert "End call from the console: the call says goodbye" in host_b.log()


def test_a_turn_committed_behind_a_newer_id_still_reaches_the_viewers(db):
    """On PostgreSQL two processes' turns may commit out of id order: a look reads the last
    seconds' ids again, so the one committed late is not skipped."""
    from datetime import datetime, timezone

    from services.store.models import Business, Turn, utcnow

    with db.session() as session:
        business = Business(name="מספרה")
        session.add(business)
        session.flush()
        call = Call(call_sid="CAlate", business_id=business.id, status="in-progress", stream_sid="MZlate",
                    last_seen_at=utcnow(), live_state="listening")
        session.add(call)
        session.flush()
        call_id = call.id
    feed = LiveFeed(db, interval_s=0.2, reread_s=5.0)
    viewer = feed.subscribe(None)
    seen: list[tuple[str, str]] = []

    def said() -> list[str]:
        while (event := viewer.next_event(0)) is not None:
            for view in event[1]["calls"]:
                seen.extend((turn["speaker"], turn["text"]) for turn in view["turns"])
        return [text for _, text in seen]

    def store(turn_id: int, text: str, second: int) -> None:
        with db.session() as session:
            session.add(Turn(id=turn_id, call_id=call_id, speaker="caller", text=text,
                             started_at=datetime(2025, 1, 1, 10, 0, second, tzinfo=timezone.utc)))

    try:
        store(100, "newer id, committed first", 2)
        wait_for(lambda: said() == ["newer id, committed first"], 10, message="the first turn")
        gevent.sleep(1.0)  # several looks past id 100
        store(50, "older id, committed late", 1)
        wait_for(lambda: said() == ["newer id, committed first", "older id, committed late"], 10,
                 message="the turn committed late")
    finally:
        feed.leave(viewer)
