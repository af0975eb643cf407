"""Business webhooks go to public https addresses only: the scheme before anything, the address
where the socket is opened (so a name that later resolves elsewhere is caught), no redirects."""
from __future__ import annotations

import socket

import pytest
import requests
from sqlalchemy import select

from services.post_call import public_http, webhook
from services.post_call.public_http import why_not_public
from services.store.models import WebhookDelivery
from tests.fakes.waiting import wait_for

TURNS = [("agent", "שלום, איך אפשר לעזור?"), ("caller", "אני רוצה לקבוע תור")]


@pytest.mark.parametrize("address", [
    "127.0.0.1", "127.8.9.10", "10.0.0.1", "172.16.5.4", "192.168.1.1", "100.64.0.1", "100.100.100.200",
    "169.254.169.254", "169.254.1.1", "0.0.0.0", "224.0.0.1", "239.255.255.250", "240.0.0.1",
    "255.255.255.255", "192.0.2.1", "198.18.0.1", "::1", "::", "fe80::1", "fc00::1", "fd00:ec2::254",
    "fec0::1", "ff02::1", "::ffff:127.0.0.1", "::ffff:169.254.169.254", "::ffff:10.1.2.3",
    "64:ff9b::7f00:1", "64:ff9b:1::1", "2002:7f00:1::", "2001:db8::1", "2001::1",
])
def test_addresses_that_are_not_public_are_named(address):
    assert why_not_public(address)


@pytest.mark.parametrize("address", [
    "8.8.8.8", "1.1.1.1", "93.184.216.34", "2606:4700:4700::1111", "2a00:1450:4001:80b::200e",
    "::ffff:8.8.8.8", "64:ff9b::808:808",
])
def test_public_addresses_pass(address):
    assert why_not_public(address) is None


def test_the_reasons_say_what_the_address_is():
    assert why_not_public("127.0.0.1") == "loopback"
    assert "metadata" in why_not_public("169.254.169.254")
    assert why_not_public("::ffff:10.0.0.1").startswith("private")


def test_a_name_that_resolves_to_a_private_address_is_refused_when_connecting(monkeypatch):
    connects = []
    real_connect = socket.socket.connect
    monkeypatch.setattr(socket, "getaddrinfo", lambda host, port, *a, **k: [
        (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.216.34", port)),
        (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port))])
    monkeypatch.setattr(socket.socket, "connect", lambda self, addr: connects.append(addr) or real_connect(self, addr))
    attempt = webhook.post(public_http.public_session(), "https://crm.rebinding.example/hooks", "s" * 16,
                           {"id": "evt_1", "type": "call.completed"}, 2.0)
    assert not attempt.ok and attempt.status_code is None
    assert attempt.error.startswith("refused: crm.rebinding.example resolves to 127.0.0.1, a loopback address")
    assert connects == []


def test_the_socket_goes_to_the_address_that_was_checked(monkeypatch, world):
    """Pinned: the connection uses the resolved address; the Host header keeps the name."""
    port = int(world.receiver.url.split(":")[2].split("/")[0])
    monkeypatch.setattr(socket, "getaddrinfo", lambda host, p, *a, **k: [
        (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", p))])
    url = f"http://hooks.business.example:{port}/hooks/calls"
    attempt = webhook.post(public_http.public_session(allow_private=True), url, world.receiver.secret,
                           {"id": "evt_2", "type": "call.completed"}, 2.0, allow_http=True)
    assert attempt.ok, attempt.error
    assert world.receiver.received[-1].headers["Host"] == f"hooks.business.example:{port}"


def test_redirects_are_not_followed(monkeypatch):
    class Redirecting(requests.adapters.BaseAdapter):
        def send(self, request, **kwargs):
            response = requests.Response()
            response.status_code, response.url, response.request = 302, request.url, request
            response.headers["Location"] = "https://elsewhere.example/"
            response.raw = None
            return response

    session = requests.Session()
    session.mount("https://", Redirecting())
    attempt = webhook.post(session, "https://crm.example.com/hooks", "s" * 16, {"id": "evt_3", "type": "x"}, 2.0)
    assert not attempt.ok and attempt.status_code == 302 and attempt.error == "HTTP 302"


def _rows(world):
    with world.live.db.session() as session:
        rows = list(session.scalars(select(WebhookDelivery).order_by(WebhookDelivery.id)))
        session.expunge_all()
        return rows


def test_a_plain_http_loopback_webhook_is_refused_with_the_settings_off(make_world):
    world = make_world(settings_changes={"webhook_allow_http": False, "webhook_allow_private": False})
    world.start_worker(max_attempts=1)
    world.end_call(TURNS)
    wait_for(lambda: _rows(world), 8.0, message="a stored delivery attempt")
    row = _rows(world)[0]
    assert not row.ok and row.status_code is None
    assert row.error.startswith("refused: the webhook URL must be https://")
    assert world.receiver.received == []


def test_an_https_name_on_loopback_is_refused_without_a_connection(make_world):
    world = make_world(webhook_url="https://localhost:9/hooks/calls",
                       settings_changes={"webhook_allow_private": False})
    world.start_worker(max_attempts=1)
    world.end_call(TURNS)
    wait_for(lambda: _rows(world), 8.0, message="a stored delivery attempt")
    row = _rows(world)[0]
    assert not row.ok and "loopback address" in row.error and row.error.startswith("refused: localhost resolves")


def test_the_receivers_answer_is_not_stored(world):
    world.receiver.answer_next(500)
    world.start_worker()
    world.end_call(TURNS)
    wait_for(lambda: any(r.ok for r in _rows(world)), 8.0, message="a delivered event")
    failed = _rows(world)[0]
    assert failed.error == "HTTP 500" and failed.status_code == 500 and failed.duration_ms is not None


def test_the_api_refuses_a_plain_http_webhook_url(live_server):
    base = f"{live_server.base_url}/api/businesses"
    refused = requests.post(base, json={"name": "עסק", "webhook_url": "http://crm.example.com/hooks"}, timeout=5)
    assert refused.status_code == 422
    assert refused.json()["fields"] == {"webhook_url": "must be an https:// URL of at most 500 characters"}
    created = requests.post(base, json={"name": "עסק", "webhook_url": "https://crm.example.com/hooks"}, timeout=5)
    assert created.status_code == 201, created.text


def test_the_api_takes_plain_http_with_the_development_setting(make_live_server, settings):
    live = make_live_server(settings.replace(webhook_allow_http=True))
    created = requests.post(f"{live.base_url}/api/businesses",
                            json={"name": "עסק", "webhook_url": "http://127.0.0.1:8080/hooks"}, timeout=5)
    assert created.status_code == 201, created.text


def test_the_switches_are_read_from_the_environment():
    from services.settings import Settings, SettingsError

    assert not Settings.from_env({}).webhook_allow_http
    on = Settings.from_env({"WEBHOOK_ALLOW_HTTP": "on", "WEBHOOK_ALLOW_PRIVATE": "ON", "SECRET_KEY": "k"})
    assert on.webhook_allow_http and on.webhook_allow_private
    with pytest.raises(SettingsError, match="WEBHOOK_ALLOW_HTTP"):
        Settings.from_env({"WEBHOOK_ALLOW_HTTP": "yes", "SECRET_KEY": "k"})
