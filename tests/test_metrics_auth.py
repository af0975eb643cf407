"""/metrics: behind METRICS_TOKEN when set; unset, loopback peers of a loopback-only server."""
import dataclasses
import logging

import requests

from services.settings import Settings


def _metrics(live, **headers):
    return requests.get(f"{live.base_url}/metrics", headers=headers, timeout=5)


def test_with_a_token_metrics_need_it(make_live_server, settings):
    live = make_live_server(dataclasses.replace(settings, metrics_token="scrape-me"))
    assert _metrics(live).status_code == 401
    assert _metrics(live, Authorization="Bearer nope").status_code == 401
    assert _metrics(live, Authorization="scrape-me").status_code == 401
    refused = _metrics(live, Authorization="Bearer scrape-mé")
    assert refused.status_code == 401 and "error" in refused.json()
    right = _metrics(live, Authorization="Bearer scrape-me")
    assert right.status_code == 200 and "# TYPE" in right.text
    assert right.headers["Content-Type"].startswith("text/plain")


def test_with_a_token_any_peer_may_scrape_even_when_the_server_listens_widely(make_live_server, settings):
    live = make_live_server(dataclasses.replace(settings, metrics_token="scrape-me", host="0.0.0.0"))
    assert _metrics(live, Authorization="Bearer scrape-me").status_code == 200


def test_without_a_token_only_loopback_peers_of_a_loopback_server(make_live_server, settings, caplog):
    caplog.set_level(logging.INFO)
    local = make_live_server(settings)
    assert _metrics(local).status_code == 200
    # Bound widely, a local proxy would make every peer loopback: closed, and said so at start.
    caplog.clear()
    wide = make_live_server(dataclasses.replace(settings, host="0.0.0.0"))
    said = [r for r in caplog.records if "METRICS_TOKEN" in r.getMessage()]
    assert len(said) == 1 and said[0].levelno == logging.WARNING
    refused = _metrics(wide)
    assert refused.status_code == 403 and "METRICS_TOKEN" in refused.json()["error"]
    # Behind a trusted proxy the forwarded client is the peer: not loopback, refused.
    proxied = make_live_server(dataclasses.replace(settings, trusted_proxies=1))
    assert _metrics(proxied, **{"X-Forwarded-For": "203.0.113.5"}).status_code == 403
    assert _metrics(proxied, **{"X-Forwarded-For": "127.0.0.1"}).status_code == 200


def test_the_setting_is_read():
    assert Settings.from_env({}).metrics_token == ""
    assert Settings.from_env({"METRICS_TOKEN": " tok "}).metrics_token == "tok"
