"""Who may use the admin API."""
import requests

from tests.conftest import dataclasses


def test_a_configured_token_is_required(make_live_server, settings):
    live = make_live_server(dataclasses.replace(settings, admin_api_token="t"))
    url = f"{live.base_url}/api/businesses"
    assert requests.get(url, timeout=5).status_code == 401
    wrong = requests.get(url, headers={"Authorization": "Bearer nope"}, timeout=5)
    assert wrong.status_code == 401 and "error" in wrong.json()
    assert requests.post(url, json={"name": "X"}, headers={"Authorization": "Bearer nope"}, timeout=5).status_code == 401
    right = requests.get(url, headers={"Authorization": "Bearer t"}, timeout=5)
    assert right.status_code == 200 and right.json() == {"businesses": []}


def test_the_token_is_checked_before_anything_else(make_live_server, settings):
    live = make_live_server(dataclasses.replace(settings, admin_api_token="t"))
    # No hint that business 999 does not exist, and no parsing of the body, without the token.
    assert requests.get(f"{live.base_url}/api/businesses/999", timeout=5).status_code == 401
    assert requests.post(f"{live.base_url}/api/leads", data="{bad", timeout=5).status_code == 401


def test_without_a_token_loopback_is_allowed(live_server):
    assert live_server.settings.admin_api_token == ""
    assert requests.get(f"{live_server.base_url}/api/calls", timeout=5).status_code == 200
