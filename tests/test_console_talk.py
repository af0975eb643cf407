"""Talk to your agent without a browser: the page's part played by the fake Twilio caller over a
loopback websocket (the same protocol talk.js speaks), with the test token the console hands out.

The token opens one stream, of one test call, for a short while; the console's page must be of the
server's own origin; the call goes through the real call session and is stored, marked as a test
call, which the overview leaves out and the history shows and filters.
"""
from __future__ import annotations

import dataclasses
import logging
import time
from datetime import timedelta

import pytest
import requests
import websocket

from server.stream_parameters import CONSOLE_MEDIA_PATH
from services.store.models import Business, Call, PhoneNumber
from tests.conftest import add_business
from tests.console_client import ADMIN_TOKEN, ConsoleClient, business_key, israel_time, listed_call_sids
from tests.fakes.realtime_server import RealtimeScript, Reply
from tests.fakes.twilio_caller import FakeTwilioCall
from tests.fakes.waiting import wait_for
from tests.harness import TEST_TIMING

TWILIO_TOKEN = "talk-twilio-auth-token"
GREETING = Reply("שלום, הגעתם למספרת הבדיקה, איך אפשר לעזור?", 800)
LONG_ANSWER = Reply("יש לנו תורים פנויים ביום ראשון בבוקר, ביום שני אחר הצהריים ומחיר תספורת הוא שמונים שקלים.",
                    5000)
AFTER_THE_CUT = Reply("כן, בבקשה?", 600)
OVERVIEW_DAY = "2025-03-04"  # a Tuesday: its week began on Sunday the 2nd


def _messages(caplog, prefix: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.getMessage().startswith(prefix)]


def _row(h, call_sid: str) -> Call:
    with h.live.db.session() as session:
        call = session.query(Call).filter_by(call_sid=call_sid).one()
        session.expunge(call)
        return call


def _signed_in(h, secret: str | None = None) -> ConsoleClient:
    client = ConsoleClient(h.live.base_url)
    assert client.sign_in(secret or business_key(h.live, h.business_id)).status_code == 302
    return client


def _open_test_call(h, client: ConsoleClient, business_id: int | None = None) -> dict:
    response = client.post(f"/console/talk/{business_id or h.business_id}/call", csrf_from="/console/talk")
    assert response.status_code == 200, response.text
    return response.json()


def _page(h, answer: dict, **options) -> FakeTwilioCall:
    """The page's part on the media socket: Twilio's protocol, the answer's parameters, the console's
    path, and (as a browser always sends it) the page's origin, which websocket-client gives as the
    server's own."""
    caller = FakeTwilioCall(f"ws://{h.live.host}:{h.live.port}{answer['media_path']}", answer["call_sid"],
                            answer["parameters"], stream_sid=answer["stream_sid"], account_sid="", **options).start()
    h.callers.append(caller)
    return caller


@pytest.fixture
def talk(make_harness):
    """A server whose real streams need Twilio's signature: the page's gets in by its origin and token."""
    return make_harness(RealtimeScript(responses=[GREETING, LONG_ANSWER, AFTER_THE_CUT]),
                        twilio_auth_token=TWILIO_TOKEN, admin_api_token=ADMIN_TOKEN)


def test_a_test_call_goes_through_the_call_session_and_is_stored_with_its_turns(talk):
    h = talk
    answer = _open_test_call(h, _signed_in(h))
    call_sid = answer["call_sid"]
    assert answer["media_path"] == CONSOLE_MEDIA_PATH and answer["parameters"]["test"] == "1"
    # Short-lived: good until the stream is due, well within a minute.
    assert int(answer["parameters"]["token"].partition(".")[0]) <= time.time() + 60
    row = _row(h, call_sid)
    assert row.is_test and row.business_id == h.business_id and row.stream_claimed_at is None

    caller = _page(h, answer)
    caller.wait_heard(GREETING.audio_ms, timeout=10)
    caller.wait_quiet(150)
    # The business's own prompt and voice reached the model.
    session = h.fake.connections[0].client_events("session.update")[0]["session"]
    assert "מספרה בתל אביב." in session["instructions"] and session["audio"]["output"]["voice"] == "alloy"
    caller.speak(600)
    # Barge-in, as on a phone call: speaking over the long answer clears it from the page's queue.
    caller.wait_heard(GREETING.audio_ms + 600, timeout=15)
    caller.speak(800)
    caller.wait_clear(timeout=10)
    caller.wait_heard(GREETING.audio_ms + 600 + AFTER_THE_CUT.audio_ms, timeout=15)
    caller.wait_quiet(300)
    caller.stop()

    stored = h.wait_ended(call_sid, timeout=10)
    assert stored.row.is_test and stored.row.end_reason == "caller_hangup"
    assert stored.row.stream_sid == answer["stream_sid"]
    assert ("agent", GREETING.text, False) in stored.turns
    assert any(speaker == "caller" and text for speaker, text, _ in stored.turns)
    assert any(speaker == "agent" and interrupted for speaker, _, interrupted in stored.turns)
    assert caller.protocol_errors == [] and caller.greenlet_errors == []
    # The API says so too.
    api = requests.get(f"{h.live.base_url}/api/calls/{call_sid}", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
                       timeout=5)
    assert api.status_code == 200 and api.json()["is_test"] is True
    # The page follows the stored transcript.
    turns = _signed_in(h).get(f"/console/talk/calls/{call_sid}/turns").json()
    assert turns["ended"] and {"speaker": "agent", "text": GREETING.text} in turns["turns"]


def test_a_test_token_opens_one_stream_only(talk, caplog):
    h = talk
    caplog.set_level(logging.WARNING, logger="media")
    answer = _open_test_call(h, _signed_in(h))
    first = _page(h, answer)
    first.wait_heard(GREETING.audio_ms, timeout=10)
    again = _page(h, answer)
    assert again.wait_closed(timeout=10) == 1008
    refused = _messages(caplog, "stream refused")
    assert [r.call_sid for r in refused] == [answer["call_sid"]]
    assert "already used" in refused[0].why
    assert len(h.fake.connections) == 1  # nothing else was opened by it
    # The first stream carries on.
    heard = first.heard_ms
    first.speak(600)
    first.wait_heard(heard + 600, timeout=15)
    assert not first.closed


def test_an_expired_test_token_is_refused(make_harness, caplog):
    h = make_harness(RealtimeScript(responses=[GREETING]), admin_api_token=ADMIN_TOKEN,
                     timing=dataclasses.replace(TEST_TIMING, stream_start_timeout_s=1.0))
    caplog.set_level(logging.WARNING, logger="media")
    answer = _open_test_call(h, _signed_in(h))
    expires = int(answer["parameters"]["token"].partition(".")[0])
    wait_for(lambda: time.time() > expires + 0.2, 5, message="the token to expire", interval=0.1)
    caller = _page(h, answer)
    assert caller.wait_closed(timeout=10) == 1008
    refused = _messages(caplog, "stream refused")
    assert refused and refused[0].why == "expired" and refused[0].call_sid == answer["call_sid"]
    assert h.fake.connections == []
    assert _row(h, answer["call_sid"]).stream_claimed_at is None


def test_the_consoles_page_opens_test_calls_only(make_harness, caplog):
    # Unsigned streams allowed (development): still the page's path takes no real call's token.
    h = make_harness(RealtimeScript(responses=[GREETING]), admin_api_token=ADMIN_TOKEN)
    caplog.set_level(logging.WARNING, logger="media")
    call_sid, placed = h.place()
    real = _page(h, {"media_path": CONSOLE_MEDIA_PATH, "call_sid": call_sid, "parameters": placed.parameters,
                     "stream_sid": "MZreal"})
    assert real.wait_closed(timeout=10) == 1008
    # A test token altered (its flag dropped, or another business named) is no token at all.
    answer = _open_test_call(h, _signed_in(h))
    unflagged = {k: v for k, v in answer["parameters"].items() if k != "test"}
    other = dict(answer["parameters"], business_id=str(h.business_id + 1))
    for parameters in (unflagged, other):
        caller = _page(h, dict(answer, parameters=parameters))
        assert caller.wait_closed(timeout=10) == 1008
    whys = [r.why for r in _messages(caplog, "stream refused")]
    assert whys == ["the console's page may open a test call only", "bad signature", "bad signature"]
    assert h.fake.connections == []
    # Neither the real call's token nor the test call's was spent: each may still open its own.
    assert _row(h, call_sid).stream_claimed_at is None
    _page(h, answer).wait_heard(GREETING.audio_ms, timeout=10)


def test_the_consoles_page_must_be_of_the_servers_origin(talk, caplog):
    h = talk
    caplog.set_level(logging.WARNING, logger="media")
    url = f"ws://{h.live.host}:{h.live.port}{CONSOLE_MEDIA_PATH}"
    for options in ({"origin": "http://evil.example"}, {"suppress_origin": True}):
        with pytest.raises(websocket.WebSocketBadStatusException) as refused:
            websocket.create_connection(url, timeout=5, **options)
        assert refused.value.status_code == 403
    assert len(_messages(caplog, "rejected media stream: the console's page of another origin")) == 2
    # Without the console's mark a stream is Twilio's, and Twilio's signature is asked of it.
    with pytest.raises(websocket.WebSocketBadStatusException) as refused:
        websocket.create_connection(h.live.media_url, timeout=5)
    assert refused.value.status_code == 403


def test_the_media_socket_agrees_to_no_extension(talk):
    """A browser always offers permessage-deflate; the server's frame reader speaks no extension."""
    h = talk
    answer = _open_test_call(h, _signed_in(h))
    ws = websocket.create_connection(f"ws://{h.live.host}:{h.live.port}{answer['media_path']}", timeout=10,
                                     header=["Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits"])
    try:
        assert "sec-websocket-extensions" not in {name.lower() for name in ws.getheaders()}
    finally:
        ws.close()


def test_a_business_key_opens_test_calls_of_its_own_business_only(talk):
    h = talk
    other = add_business(h.live, number="+972300000002", name="עסק אחר")
    client = _signed_in(h)
    assert client.post(f"/console/talk/{other}/call", csrf_from="/console/talk").status_code == 404
    page = client.get(f"/console/talk?business_id={other}")
    assert page.status_code == 200 and "עסק אחר" not in page.text and "מספרת הבדיקה" in page.text
    assert client.post(f"/console/talk/{h.business_id}/call", csrf_from=None).status_code == 400  # no CSRF token
    stranger = ConsoleClient(h.live.base_url)
    assert stranger.post(f"/console/talk/{h.business_id}/call", csrf_from=None).status_code in (302, 400)
    assert stranger.get("/console/talk").status_code == 302
    with h.live.db.session() as session:
        assert session.query(Call).count() == 0
    # The admin chooses among them all.
    admin = _signed_in(h, ADMIN_TOKEN)
    chooser = admin.get("/console/talk")
    assert "עסק אחר" in chooser.text and 'id="talk"' not in chooser.text
    assert _open_test_call(h, admin, other)["parameters"]["business_id"] == str(other)


def test_test_calls_are_left_out_of_the_overview_and_badged_in_the_history(make_live_server, settings):
    live = make_live_server(dataclasses.replace(settings, admin_api_token=ADMIN_TOKEN))
    # A fixed day, asked for by name: calls "a minute ago" are yesterday's just after midnight (and
    # last week's on a Sunday), and would leave today's figures at 0.
    with live.db.session() as session:
        business = Business(name="מספרה", phone_numbers=[PhoneNumber(e164="+972300000009")])
        session.add(business)
        session.flush()
        for clock, sid, is_test in (("10:00", "CAreal", False), ("10:01", "TESTcall", True)):
            started = israel_time(f"{OVERVIEW_DAY} {clock}")
            session.add(Call(call_sid=sid, business_id=business.id, is_test=is_test, status="completed",
                             end_reason="caller_hangup", stream_sid="MZ" + sid, started_at=started,
                             ended_at=started + timedelta(seconds=60), duration_s=60.0, cost_usd=0.05))
    client = ConsoleClient(live.base_url)
    client.sign_in()
    overview = client.get(f"/console/?day={OVERVIEW_DAY}").text
    assert 'id="calls-today">1<' in overview and 'id="answered">1<' in overview
    with_tests = client.get(f"/console/?day={OVERVIEW_DAY}&tests=1").text
    assert 'id="calls-today">2<' in with_tests
    history = client.get("/console/calls").text
    assert listed_call_sids(history) == ["TESTcall", "CAreal"]
    assert history.count("data-test-call") == 1
    assert listed_call_sids(client.get("/console/calls?kind=test").text) == ["TESTcall"]
    assert listed_call_sids(client.get("/console/calls?kind=real").text) == ["CAreal"]
    assert client.get("/console/calls?kind=other").status_code == 400
    assert 'id="test-call"' in client.get("/console/calls/TESTcall").text
    api = requests.get(f"{live.base_url}/api/calls", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=5)
    flags = {c["call_sid"]: c["is_test"] for c in api.json()["calls"]}
    assert flags == {"CAreal": False, "TESTcall": True}
