"""Closed by default: Twilio's doors without a token, the admin API's doors, one stream per token."""
import dataclasses
import logging

import pytest
import requests
import websocket

from services.settings import Settings, SettingsError
from services.store.models import Call
from tests.conftest import BUSINESS_NUMBER, CALLER_NUMBER, add_business
from tests.fakes.realtime_server import RealtimeScript, Reply
from tests.fakes.twilio_caller import FakeTwilioCall
from tests.fakes.waiting import wait_for

FORM = {"CallSid": "CA100", "AccountSid": "AC1", "From": CALLER_NUMBER, "To": BUSINESS_NUMBER,
        "Direction": "inbound", "CallStatus": "ringing"}
HINT = "set TWILIO_AUTH_TOKEN, or TWILIO_SIGNATURE_CHECK=off for development"


def test_the_settings_read_the_switches():
    assert Settings.from_env({}).twilio_signature_check is True
    assert Settings.from_env({"TWILIO_SIGNATURE_CHECK": "OFF"}).twilio_signature_check is False
    with pytest.raises(SettingsError, match="TWILIO_SIGNATURE_CHECK"):
        Settings.from_env({"TWILIO_SIGNATURE_CHECK": "no"})
    assert Settings.from_env({}).host == "0.0.0.0" and not Settings.from_env({}).listens_on_loopback_only
    for host in ("127.0.0.1", "::1", "localhost"):
        assert Settings.from_env({"HOST": host}).listens_on_loopback_only, host
    public = Settings.from_env({"PUBLIC_BASE_URL": "https://Agent.example.com"})
    assert public.api_hosts == {"localhost", "127.0.0.1", "::1", "agent.example.com"}
    assert Settings.from_env({"ALLOWED_HOSTS": "a.example.com, B.example.com"}).api_hosts == {
        "a.example.com", "b.example.com"}


def test_without_a_token_and_with_the_check_on_webhooks_and_streams_are_refused(make_live_server, settings,
                                                                                 caplog):
    live = make_live_server(dataclasses.replace(settings, twilio_signature_check=True))
    add_business(live)
    caplog.set_level(logging.WARNING)
    response = requests.post(f"{live.base_url}/webhook/incoming_call", data=FORM, timeout=5)
    assert response.status_code == 403
    assert requests.post(f"{live.base_url}/webhook/call_status", data=FORM, timeout=5).status_code == 403
    with pytest.raises(websocket.WebSocketBadStatusException) as refused:
        websocket.create_connection(live.media_url, timeout=5)
    assert refused.value.status_code == 403
    assert sum(HINT in r.getMessage() for r in caplog.records) == 3
    with live.db.session() as session:
        assert session.query(Call).count() == 0
    assert requests.get(f"{live.base_url}/healthz", timeout=5).json()["twilio_signature_check"] == "on"


def test_with_the_check_off_unsigned_calls_are_let_in_and_healthz_says_so(make_live_server, settings, caplog):
    caplog.set_level(logging.WARNING)
    live = make_live_server(settings)
    assert sum("TWILIO_SIGNATURE_CHECK=off" in r.getMessage() for r in caplog.records) == 1
    add_business(live)
    assert requests.post(f"{live.base_url}/webhook/incoming_call", data=FORM, timeout=5).status_code == 200
    websocket.create_connection(live.media_url, timeout=5).close()
    assert requests.get(f"{live.base_url}/healthz", timeout=5).json()["twilio_signature_check"] == "off"


def test_a_token_is_checked_even_with_the_check_off(make_live_server, settings):
    live = make_live_server(dataclasses.replace(settings, twilio_auth_token="tok"))
    add_business(live)
    assert requests.post(f"{live.base_url}/webhook/incoming_call", data=FORM, timeout=5).status_code == 403
    assert requests.get(f"{live.base_url}/healthz", timeout=5).json()["twilio_signature_check"] == "on"


def test_without_an_api_token_the_api_needs_a_loopback_bind(make_live_server, settings):
    live = make_live_server(dataclasses.replace(settings, host="0.0.0.0"))
    # The peer is loopback here, as it is behind a proxy on the same host: not enough.
    response = requests.get(f"{live.base_url}/api/calls", timeout=5)
    assert response.status_code == 403 and "HOST" in response.json()["error"]
    live = make_live_server(dataclasses.replace(settings, host="0.0.0.0", admin_api_token="t"))
    assert requests.get(f"{live.base_url}/api/calls", headers={"Authorization": "Bearer t"},
                        timeout=5).status_code == 200


def test_the_api_answers_only_its_own_host_names(make_live_server, settings):
    live = make_live_server(dataclasses.replace(settings, public_base_url="https://agent.example.com"))
    url = f"{live.base_url}/api/calls"
    assert requests.get(url, timeout=5).status_code == 200
    assert requests.get(url, headers={"Host": "agent.example.com"}, timeout=5).status_code == 200
    assert requests.get(url, headers={"Host": f"localhost:{live.port}"}, timeout=5).status_code == 200
    rebound = requests.get(url, headers={"Host": "evil.example.net"}, timeout=5)
    assert rebound.status_code == 400 and "error" in rebound.json()
    named = make_live_server(dataclasses.replace(settings, allowed_hosts=("admin.internal",)))
    assert requests.get(f"{named.base_url}/api/calls", timeout=5).status_code == 400
    assert requests.get(f"{named.base_url}/api/calls", headers={"Host": "admin.internal"},
                        timeout=5).status_code == 200


def test_api_bodies_must_be_json(live_server):
    url = f"{live_server.base_url}/api/businesses"
    for headers in ({}, {"Content-Type": "text/plain"}, {"Content-Type": "application/x-www-form-urlencoded"}):
        response = requests.post(url, data='{"name": "X"}', headers=headers, timeout=5)
        assert response.status_code == 415, headers
        assert "error" in response.json()
    assert requests.post(url, json={"name": "X"}, timeout=5).status_code != 415


def test_a_stream_token_is_good_for_one_stream(make_harness):
    h = make_harness(RealtimeScript(responses=[Reply("שלום, הגעתם למספרת הבדיקה", 600)]))
    call_sid, placed = h.place()
    first = FakeTwilioCall(h.live.media_url, call_sid, placed.parameters).start()
    h.callers.append(first)
    first.wait_heard(600, timeout=5)
    assert len(h.fake.connections) == 1
    second = FakeTwilioCall(h.live.media_url, call_sid, placed.parameters).start()
    h.callers.append(second)
    wait_for(lambda: second.closed, 5, message="the second stream to be refused")
    assert second.close_code == 1008 and second.media_received == 0
    # The refused stream's Realtime connection, opened while it waited for `start`, is closed
    # again without a word sent on it.
    assert h.fake.carried() == h.fake.connections[:1]
    refused = h.fake.connections[1:]
    wait_for(lambda: all(conn.closed for conn in refused), 5, message="the refused stream's connection to close")
    assert not first.closed
    with h.live.db.session() as session:
        assert session.query(Call).filter_by(call_sid=call_sid).one().stream_claimed_at is not None


def test_without_a_public_base_url_the_request_host_is_used_and_said_once(live_server, business_id, caplog,
                                                                          monkeypatch):
    from server.routes import webhooks

    monkeypatch.setattr(webhooks, "_warned_host_from_request", False)
    caplog.set_level(logging.WARNING)
    for sid in ("CA1", "CA2"):
        response = requests.post(f"{live_server.base_url}/webhook/incoming_call", data={**FORM, "CallSid": sid},
                                 timeout=5)
        assert f"wss://127.0.0.1:{live_server.port}/ws/twilio-media" in response.text
    assert sum("PUBLIC_BASE_URL is not set" in r.getMessage() for r in caplog.records) == 1
