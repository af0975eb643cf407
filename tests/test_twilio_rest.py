"""The Twilio REST client honours the environment's proxy, read once when the client is built,
and keeps its connections to Twilio through a burst of calls."""
import json

import gevent
import pytest
from gevent.event import Event
from gevent.server import StreamServer

from services.settings import Settings
from services.twilio_rest import TwilioRest

CALL_SID = "CA" + "1" * 32


def _read_request(reader) -> str:
    """One request read off the connection; its first line ("" once the client has closed)."""
    request_line = reader.readline().decode().strip()
    length = 0
    while request_line and (line := reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode().partition(":")
        if name.lower() == "content-length":
            length = int(value)
    reader.read(length)
    return request_line


def _recording_started(headers: bytes = b"") -> bytes:
    """Twilio's answer to a recording start."""
    body = json.dumps({"sid": "RE" + "2" * 32, "status": "in-progress"}).encode()
    return (b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\n%sContent-Length: %d\r\n\r\n%s"
            % (headers, len(body), body))


@pytest.fixture
def http_listener():
    """A loopback server that keeps each request's first line and answers as Twilio does a
    recording start."""
    request_lines: list[str] = []

    def handle(sock, _address):
        reader = sock.makefile("rb")
        request_lines.append(_read_request(reader))
        sock.sendall(_recording_started(b"Connection: close\r\n"))
        sock.close()

    server = StreamServer(("127.0.0.1", 0), handle)
    server.start()
    yield server.server_port, request_lines
    server.stop()


@pytest.fixture
def keep_alive_listener():
    """A loopback server that keeps its connections open, counts them, and holds every answer
    until `burst` requests are in at once (so a burst really needs that many connections)."""
    state = {"connections": 0, "waiting": 0, "burst": 0}
    released = {"event": Event()}

    def answer_when_all_are_in() -> None:
        state["waiting"] += 1
        if state["waiting"] == state["burst"]:
            released["event"].set()
        released["event"].wait(30.0)

    def handle(sock, _address):
        state["connections"] += 1
        reader = sock.makefile("rb")
        while _read_request(reader):
            answer_when_all_are_in()
            sock.sendall(_recording_started())
        sock.close()

    def next_burst(size: int) -> None:
        state["waiting"], state["burst"], released["event"] = 0, size, Event()

    server = StreamServer(("127.0.0.1", 0), handle)
    server.start()
    yield server.server_port, state, next_burst
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


def test_a_burst_of_calls_reuses_the_connections_the_burst_before_opened(keep_alive_listener, no_proxy_env):
    port, state, next_burst = keep_alive_listener
    rest = TwilioRest(_settings(f"http://127.0.0.1:{port}"))
    burst = 20  # beyond the twilio client's own pool (cpu_count + 4) on a small machine

    for _ in range(2):
        next_burst(burst)
        starts = [gevent.spawn(rest.start_recording, CALL_SID, "https://example.test/cb") for _ in range(burst)]
        gevent.joinall(starts, timeout=30.0, raise_error=True)
        assert [start.value for start in starts] == ["RE" + "2" * 32] * burst
    assert state["connections"] == burst
