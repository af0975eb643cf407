"""Fixtures of the console's form tests: a server with an admin token, one business, a signed-in
client, and the API as the admin calls it (to compare what a form saved with what the API shows)."""
from __future__ import annotations

import dataclasses

import pytest
import requests

from services.store.models import Business, PhoneNumber
from tests.console_client import ADMIN_TOKEN, ConsoleClient


@pytest.fixture
def console_server(make_live_server, settings):
    return make_live_server(dataclasses.replace(settings, admin_api_token=ADMIN_TOKEN))


@pytest.fixture
def business_id(console_server) -> int:
    with console_server.db.session() as session:
        business = Business(name="מספרה", phone_numbers=[PhoneNumber(e164="+972300000001")])
        session.add(business)
        session.flush()
        return business.id


@pytest.fixture
def client(console_server) -> ConsoleClient:
    client = ConsoleClient(console_server.base_url)
    client.sign_in()
    return client


def api(live, method: str, path: str, **kwargs) -> requests.Response:
    return requests.request(method, live.base_url + path, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
                            timeout=10, **kwargs)


def apart_from_today(preview: dict) -> tuple[dict, str]:
    """A preview's layers and instructions with the today layer taken out: it names the minute (and the
    day) of the request, and two requests may fall either side of a minute's turn."""
    layers = dict(preview["layers"])
    today = layers.pop("today")["text"]
    assert today.startswith("## Today") and today in preview["instructions"]["text"]
    return layers, preview["instructions"]["text"].replace(today, "<today>")
