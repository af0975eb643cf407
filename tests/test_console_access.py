"""Who gets into the console: sign-in, the session cookie, CSRF, sign-out, the loopback rule."""
from __future__ import annotations

import dataclasses

import pytest
import requests

from server.console.throttle import MAX_FAILURES, SignInThrottle
from services.store.models import Business, Call
from tests.console_client import ADMIN_TOKEN, ConsoleClient, business_key

PAGES = ("/console/", "/console/calls", "/console/businesses", "/console/calls/CA404")


@pytest.fixture
def console_server(make_live_server, settings):
    return make_live_server(dataclasses.replace(settings, admin_api_token=ADMIN_TOKEN))


@pytest.fixture
def client(console_server) -> ConsoleClient:
    return ConsoleClient(console_server.base_url)


def test_the_root_leads_to_the_console(client):
    answer = client.get("/")
    assert answer.status_code == 302 and answer.headers["Location"].endswith("/console/")


@pytest.mark.parametrize("path", PAGES)
def test_every_page_wants_a_signed_in_viewer(client, path):
    answer = client.get(path)
    assert answer.status_code == 302
    assert answer.headers["Location"].startswith("/console/sign-in?next=")


def test_the_admin_token_signs_in_with_a_cookie_scripts_and_other_sites_cannot_use(client):
    answer = client.sign_in()
    assert answer.status_code == 302 and answer.headers["Location"] == "/console/"
    cookie = answer.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Path=/console" in cookie
    assert "Secure" not in cookie, "plain http here: a Secure cookie would never come back"
    assert ADMIN_TOKEN not in cookie
    page = client.get("/console/")
    assert page.status_code == 200 and '<html lang="he" dir="rtl">' in page.text


def test_the_cookie_is_secure_behind_https(make_live_server, settings):
    live = make_live_server(dataclasses.replace(settings, admin_api_token=ADMIN_TOKEN,
                                                public_base_url="https://console.example"))
    # The sign-in page already sets the cookie (its CSRF token); over this plain-http test socket a
    # Secure cookie would not come back, so the sign-in itself cannot be posted here.
    answer = ConsoleClient(live.base_url).get("/console/sign-in")
    assert answer.status_code == 200 and "Secure" in answer.headers["Set-Cookie"]


def test_sign_in_returns_to_the_page_asked_for_but_never_to_another_site(client):
    assert client.post("/console/sign-in", {"secret": ADMIN_TOKEN, "next": "/console/calls?status=completed"}
                       ).headers["Location"] == "/console/calls?status=completed"
    other = ConsoleClient(client.base_url)
    for target in ("https://evil.example/", "//evil.example/console", "/console\\@evil.example"):
        assert other.post("/console/sign-in", {"secret": ADMIN_TOKEN, "next": target}).headers["Location"] == "/console/"


def test_a_wrong_token_is_refused_and_opens_nothing(client):
    answer = client.sign_in("not-the-token")
    assert answer.status_code == 401 and 'id="sign-in-error"' in answer.text
    assert client.get("/console/calls").status_code == 302


def test_the_api_bearer_header_does_not_open_the_console(client):
    answer = client.get("/console/calls", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert answer.status_code == 302


def test_a_form_without_its_csrf_token_is_refused(client):
    assert client.post("/console/sign-in", {"secret": ADMIN_TOKEN}, csrf_from=None).status_code == 400
    assert client.get("/console/calls").status_code == 302, "the refused form signed nobody in"
    client.sign_in()
    answer = client.post("/console/sign-out", csrf_from=None)
    assert answer.status_code == 400 and "אסימון אבטחה" in answer.text
    answer = client.post("/console/sign-out", {"csrf_token": "forged"}, csrf_from=None)
    assert answer.status_code == 400
    assert client.get("/console/calls").status_code == 200, "still signed in"


def test_a_csrf_token_of_another_session_is_refused(client):
    other = ConsoleClient(client.base_url)
    other.sign_in()
    stolen = other.csrf_token("/console/calls")
    client.sign_in()
    assert client.post("/console/sign-out", {"csrf_token": stolen}, csrf_from=None).status_code == 400


def test_sign_out_ends_the_session(client):
    client.sign_in()
    answer = client.post("/console/sign-out", csrf_from="/console/calls")
    assert answer.status_code == 302 and answer.headers["Location"] == "/console/sign-in"
    assert client.get("/console/calls").status_code == 302


def test_a_changed_admin_token_ends_the_sessions_opened_with_the_old_one(make_live_server, settings):
    first = make_live_server(dataclasses.replace(settings, admin_api_token=ADMIN_TOKEN))
    client = ConsoleClient(first.base_url)
    client.sign_in()
    assert client.get("/console/calls").status_code == 200
    second = make_live_server(dataclasses.replace(settings, admin_api_token="a-new-admin-token"))
    client.base_url = second.base_url
    assert client.get("/console/calls").status_code == 302


def test_sign_in_attempts_are_limited_per_peer(client):
    for _ in range(MAX_FAILURES):
        assert client.sign_in("guess").status_code == 401
    answer = client.sign_in()
    assert answer.status_code == 429 and int(answer.headers["Retry-After"]) > 0
    assert client.get("/console/calls").status_code == 302, "even the right token waits out the limit"


def test_without_a_token_the_console_opens_to_loopback_on_a_loopback_server(live_server):
    """As the API: no ADMIN_API_TOKEN, HOST 127.0.0.1 (the test settings), a loopback peer."""
    assert ConsoleClient(live_server.base_url).get("/console/calls").status_code == 200


def test_without_a_token_a_server_listening_beyond_loopback_keeps_the_console_shut(make_live_server, settings):
    live = make_live_server(dataclasses.replace(settings, host="0.0.0.0"))
    client = ConsoleClient(live.base_url)
    assert client.get("/console/calls").status_code == 302
    page = client.get("/console/sign-in")
    assert "ADMIN_API_TOKEN" in page.text
    assert client.sign_in("").status_code == 401 and client.sign_in("anything").status_code == 401


def test_a_host_name_the_server_does_not_answer_to_is_refused(live_server):
    """DNS rebinding: a page of another site, renamed to 127.0.0.1, still sends its own Host."""
    answer = requests.get(f"{live_server.base_url}/console/calls", headers={"Host": "rebound.example"},
                          allow_redirects=False, timeout=5)
    assert answer.status_code == 400


def _business_with_call(live, name: str, call_sid: str) -> int:
    with live.db.session() as session:
        business = Business(name=name)
        session.add(business)
        session.flush()
        session.add(Call(call_sid=call_sid, business_id=business.id, status="completed"))
        return business.id


def test_a_business_key_sees_its_own_calls_and_not_another_business(console_server):
    mine = _business_with_call(console_server, "שלי", "CAmine")
    theirs = _business_with_call(console_server, "של אחרים", "CAtheirs")
    key = business_key(console_server, mine)
    client = ConsoleClient(console_server.base_url)
    assert client.sign_in(key[:-2] + "xx").status_code == 401
    assert client.sign_in(key).status_code == 302
    assert client.get("/console/calls/CAmine").status_code == 200
    assert client.get("/console/calls/CAtheirs").status_code == 404
    listing = client.get("/console/calls").text
    assert "CAmine" in listing and "CAtheirs" not in listing
    assert client.get(f"/console/calls?business_id={theirs}").text.count("data-call-sid") == 0
    assert client.get(f"/console/businesses/{theirs}").status_code == 404
    assert client.get("/console/businesses").headers["Location"] == f"/console/businesses/{mine}"
    token = client.csrf_token("/console/calls/CAmine")
    assert client.post("/console/calls/CAtheirs/reprocess", {"csrf_token": token}, csrf_from=None).status_code == 404


def test_the_english_switch_turns_the_page_left_to_right_and_back(client):
    client.sign_in()
    assert '<html lang="he" dir="rtl">' in client.get("/console/calls").text
    answer = client.post("/console/language", {"next": "/console/calls"}, csrf_from="/console/calls")
    assert answer.status_code == 302 and answer.headers["Location"] == "/console/calls"
    page = client.get("/console/calls").text
    assert '<html lang="en" dir="ltr">' in page and ">Calls</h1>" in page
    client.post("/console/language", csrf_from="/console/calls")
    assert '<html lang="he" dir="rtl">' in client.get("/console/calls").text


def test_the_sign_in_limit_forgets_failures_older_than_its_window():
    throttle = SignInThrottle(max_failures=2, window_s=10.0)
    throttle.failed("198.51.100.7", now=0.0)
    assert throttle.retry_after_s("198.51.100.7", now=1.0) == 0.0
    throttle.failed("198.51.100.7", now=1.0)
    assert throttle.retry_after_s("198.51.100.7", now=2.0) == 8.0
    assert throttle.retry_after_s("203.0.113.9", now=2.0) == 0.0, "another peer is not held back"
    assert throttle.retry_after_s("198.51.100.7", now=10.5) == 0.0, "the first failure left the window"
    throttle.failed("198.51.100.7", now=11.0)
    assert throttle.retry_after_s("198.51.100.7", now=11.5) == 0.0
    throttle.succeeded("198.51.100.7")
    throttle.failed("198.51.100.7", now=12.0)
    assert throttle.retry_after_s("198.51.100.7", now=12.0) == 0.0, "a success clears the count"


def test_revoking_a_key_ends_its_console_session_at_the_next_page(console_server):
    from services.store import api_keys
    from services.store.models import ApiKey

    mine = _business_with_call(console_server, "שלי", "CAmine")
    key = business_key(console_server, mine)
    client = ConsoleClient(console_server.base_url)
    assert client.sign_in(key).status_code == 302
    assert client.get("/console/calls/CAmine").status_code == 200
    with console_server.db.session() as session:
        api_keys.revoke(session, session.query(ApiKey).filter_by(business_id=mine).one())
    answer = client.get("/console/calls/CAmine")
    assert answer.status_code == 302 and answer.headers["Location"].startswith("/console/sign-in")
    assert client.sign_in(key).status_code == 401
