"""The Twilio REST client honours the environment's proxy, read once when the client is built."""
import json

import pytest
from gevent.server import StreamServer

from services.settings import Settings
from services.twilio_rest import TwilioRest

CALL_SID = "CA" + "1" * 32


@pytest.fixture
def http_listener():
    """A loopback server that keeps each request's first line and answers as Twilio does a
    recording start."""
    request_lines: list[str] = []

    def handle(sock, _address):
        reader = sock.makefile("rb")
        request_lines.append(reader.readline().decode().strip())
        length = 0
        while (line := reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode().partition(":")
            if name.lower() == "content-length":
                length = int(value)
        reader.read(length)
        body = json.dumps({"sid": "RE" + "2" * 32, "status": "in-progress"}).encode()
        sock.sendall(b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nConnection: close\r\n"
                     b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
        sock.close()

    server = StreamServer(("127.0.0.1", 0), handle)
    server.start()
    yield server.server_port, request_lines
    server.stop()


def _settings(base_url: str) -> Settings:
    return Settings.from_env({"TWILIO_ACCOUNT_SID": "AC" + "3" * 32, "TWILIO_AUTH_TOKEN": "t" * 32,
                              "TWILIO_API_BASE_URL": base_url})


@pytest.fixture
def no_proxy_env(monkeypatch):
    for name in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy",
                 "NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_a_request_goes_through_the_proxy_the_environment_names(http_listener, no_proxy_env):
    port, request_lines = http_listener
    no_proxy_env.setenv("HTTP_PROXY", f"http://127.0.0.1:{port}")
    # A host that resolves nowhere: only the proxy can have answered.
    rest = TwilioRest(_settings("http://twilio-proxied.invalid"))

    assert rest.start_recording(CALL_SID, "https://example.test/cb") == "RE" + "2" * 32
    assert request_lines == [f"POST http://twilio-proxied.invalid/2010-04-01/Accounts/AC{'3' * 32}"
                             f"/Calls/{CALL_SID}/Recordings.json HTTP/1.1"]


def test_without_a_proxy_a_request_goes_straight_to_its_host(http_listener, no_proxy_env):
    port, request_lines = http_listener
    no_proxy_env.setenv("HTTPS_PROXY", "http://127.0.0.1:9")  # for https only: not this base
    rest = TwilioRest(_settings(f"http://127.0.0.1:{port}"))

    rest.start_recording(CALL_SID, "https://example.test/cb")
    assert request_lines == [f"POST /2010-04-01/Accounts/AC{'3' * 32}/Calls/{CALL_SID}/Recordings.json HTTP/1.1"]
