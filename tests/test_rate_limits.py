"""Rate limits on the API: per key, and per client address for failed sign-ins; Twilio's doors
are not limited."""
import dataclasses

import pytest
import requests

from server import create_app
from services.settings import Settings, SettingsError
from tests.conftest import BUSINESS_NUMBER, CALLER_NUMBER, add_business
from tests.tenants import add_tenant, bearer, make_key

# Hours: no window moves on while a test runs, however slow the machine.
THREE = "3 per hour"


def _too_many(response) -> None:
    assert response.status_code == 429, response.text
    assert "error" in response.json()
    assert 1 <= int(response.headers["Retry-After"]) <= 3600


def test_a_key_gets_429_past_its_limit_and_other_keys_do_not(make_live_server, settings):
    live = make_live_server(dataclasses.replace(settings, api_rate_limit=THREE))
    a, b = add_tenant(live, 1), add_tenant(live, 2)
    key_a = bearer(make_key(live, a.business_id)["key"])  # the admin's 1st request
    key_b = bearer(make_key(live, b.business_id)["key"])  # its 2nd
    url = f"{live.base_url}/api/calls"
    # One count over the whole API, whichever route.
    assert requests.get(url, headers=key_a, timeout=5).status_code == 200
    assert requests.get(f"{url}/{a.call_sid}", headers=key_a, timeout=5).status_code == 200
    assert requests.get(f"{live.base_url}/api/leads", headers=key_a, timeout=5).status_code == 200
    _too_many(requests.get(url, headers=key_a, timeout=5))
    _too_many(requests.post(f"{live.base_url}/api/leads", json={"business_id": a.business_id,
                                                               "phone": "+972541112233"}, headers=key_a, timeout=5))
    assert requests.get(url, headers=key_b, timeout=5).status_code == 200
    assert requests.get(url, timeout=5).status_code == 200  # the admin's 3rd
    _too_many(requests.get(url, timeout=5))


def test_failed_sign_ins_from_an_address_are_limited_even_for_a_right_key(make_live_server, settings):
    live = make_live_server(dataclasses.replace(settings, api_auth_failure_limit=THREE))
    a = add_tenant(live, 1)
    key = bearer(make_key(live, a.business_id)["key"])
    url = f"{live.base_url}/api/calls"
    # Right requests do not count.
    for _ in range(5):
        assert requests.get(url, headers=key, timeout=5).status_code == 200
    for guess in ("bk_" + "a" * 43, "bk_" + "b" * 43, "nope"):
        assert requests.get(url, headers=bearer(guess), timeout=5).status_code == 401
    _too_many(requests.get(url, headers=bearer("bk_" + "c" * 43), timeout=5))
    # A right guess now learns nothing: it is refused like the others.
    _too_many(requests.get(url, headers=key, timeout=5))


def test_behind_a_trusted_proxy_the_forwarded_address_is_counted(make_live_server, settings):
    url_of = lambda live: f"{live.base_url}/api/calls"  # noqa: E731
    wrong = {"Authorization": "Bearer nope"}
    trusting = make_live_server(dataclasses.replace(settings, api_auth_failure_limit=THREE, trusted_proxies=1))
    for _ in range(3):
        assert requests.get(url_of(trusting), headers={**wrong, "X-Forwarded-For": "203.0.113.7"},
                            timeout=5).status_code == 401
    _too_many(requests.get(url_of(trusting), headers={**wrong, "X-Forwarded-For": "203.0.113.7"}, timeout=5))
    assert requests.get(url_of(trusting), headers={**wrong, "X-Forwarded-For": "203.0.113.8"},
                        timeout=5).status_code == 401
    # By default nothing a client says about its address is believed: one peer, one count.
    plain = make_live_server(dataclasses.replace(settings, api_auth_failure_limit=THREE))
    for index in range(3):
        assert requests.get(url_of(plain), headers={**wrong, "X-Forwarded-For": f"203.0.113.{index}"},
                            timeout=5).status_code == 401
    _too_many(requests.get(url_of(plain), headers={**wrong, "X-Forwarded-For": "203.0.113.99"}, timeout=5))


def test_twilio_webhooks_and_health_are_not_limited(make_live_server, settings):
    live = make_live_server(dataclasses.replace(settings, api_rate_limit="2 per hour",
                                                api_auth_failure_limit="2 per hour"))
    add_business(live)
    form = {"CallSid": "CA1", "AccountSid": "AC1", "From": CALLER_NUMBER, "To": BUSINESS_NUMBER,
            "Direction": "inbound", "CallStatus": "ringing"}
    for index in range(6):
        form["CallSid"] = f"CA{index}"
        assert requests.post(f"{live.base_url}/webhook/call_status", data=form, timeout=5).status_code == 200
        assert requests.get(f"{live.base_url}/healthz", timeout=5).status_code == 200
    for _ in range(2):
        requests.get(f"{live.base_url}/api/calls", timeout=5)
    _too_many(requests.get(f"{live.base_url}/api/calls", timeout=5))
    assert requests.post(f"{live.base_url}/webhook/call_status", data=form, timeout=5).status_code == 200


def test_the_settings_read_the_limits():
    defaults = Settings.from_env({})
    assert (defaults.api_rate_limit, defaults.api_auth_failure_limit) == ("120 per minute", "10 per minute")
    assert defaults.rate_limit_storage_url == "memory://" and defaults.trusted_proxies == 0
    assert Settings.from_env({"API_RATE_LIMIT": "5/second;100/hour"}).api_rate_limit == "5/second;100/hour"
    for name, value in (("API_RATE_LIMIT", "lots"), ("API_AUTH_FAILURE_LIMIT", "10 per fortnight"),
                        ("RATE_LIMIT_STORAGE_URL", "localhost:6379"), ("TRUSTED_PROXIES", "-1")):
        with pytest.raises(SettingsError, match=name):
            Settings.from_env({name: value})


def test_a_storage_the_server_cannot_use_stops_it_at_start(settings):
    # redis:// needs its client package, which the project does not install.
    with pytest.raises(SettingsError, match="RATE_LIMIT_STORAGE_URL"):
        create_app(dataclasses.replace(settings, rate_limit_storage_url="redis://127.0.0.1:9"))
    with pytest.raises(SettingsError, match="RATE_LIMIT_STORAGE_URL"):
        create_app(dataclasses.replace(settings, rate_limit_storage_url="nosuch://x"))
