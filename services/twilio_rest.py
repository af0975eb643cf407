"""Twilio's REST API, the few calls the server makes: place a call, change a live call, record.

A thin wrapper over the `twilio` client. Its HTTP base is `TWILIO_API_BASE_URL` (tests point it
at a local fake), and every failure is one `TwilioRestError` with Twilio's status and message.
Blocking HTTP through `requests`, which gevent makes cooperative: call it from a request or a
greenlet of its own, never from a call's audio greenlets.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import requests
from twilio.base.exceptions import TwilioException, TwilioRestException
from twilio.http.http_client import TwilioHttpClient
from twilio.rest import Client

from services.settings import Settings

TWILIO_API = "https://api.twilio.com"
REQUEST_TIMEOUT_S = 10.0
# Connections kept to Twilio: every call of a burst asks for its recording at once, and each one
# past the pool is opened (a TLS handshake) and thrown away. The client's own pool is cpu_count + 4.
KEPT_CONNECTIONS = 64
log = logging.getLogger("twilio_rest")


class TwilioNotConfigured(Exception):
    """TWILIO_ACCOUNT_SID or TWILIO_AUTH_TOKEN is not set."""


class TwilioRestError(Exception):
    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status  # Twilio's HTTP status; None when Twilio was not reached


class _BaseUrlHttpClient(TwilioHttpClient):
    """Sends what the client addresses to api.twilio.com to the configured base instead."""

    def __init__(self, base_url: str):
        self._base_url = base_url.rstrip("/")
        # requests reads the proxy and CA settings of the environment at every request, a scan of
        # os.environ that made a third of a recording start's Python calls; the process's environment does
        # not change, so they are read once, here.
        super().__init__(timeout=REQUEST_TIMEOUT_S, proxy=requests.utils.get_environ_proxies(self._base_url))
        self.session.trust_env = False
        for scheme in ("https://", "http://"):
            self.session.mount(scheme, requests.adapters.HTTPAdapter(pool_maxsize=KEPT_CONNECTIONS))
        self.session.verify = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or True

    def request(self, method, url, *args, **kwargs):
        if url.startswith(TWILIO_API):
            url = self._base_url + url[len(TWILIO_API):]
        return super().request(method, url, *args, **kwargs)


@dataclass(frozen=True)
class PlacedCall:
    call_sid: str
    status: str


_clients: dict[tuple[str, str, str], Client] = {}


def _client(settings: Settings) -> Client:
    """One client per process and credentials: its HTTP session keeps its connections to Twilio."""
    key = (settings.twilio_account_sid, settings.twilio_auth_token, settings.twilio_api_base_url)
    client = _clients.get(key)
    if client is None:
        client = _clients[key] = Client(key[0], key[1], http_client=_BaseUrlHttpClient(key[2]))
    return client


def warm_up(settings: Settings) -> None:
    """Build the client and load the modules it imports on first use (about 170 ms of CPU on the
    event loop, which would otherwise land on the first calls' greetings), before calls arrive."""
    if settings.twilio_account_sid and settings.twilio_auth_token:
        call = _client(settings).calls("CA" + "0" * 32)
        call.recordings  # noqa: B018 - the attribute's first read imports its module


class TwilioRest:
    def __init__(self, settings: Settings):
        if not (settings.twilio_account_sid and settings.twilio_auth_token):
            raise TwilioNotConfigured("set TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN to use Twilio's REST API")
        self._client = _client(settings)

    def create_call(self, *, to: str, from_: str, url: str, status_callback: str,
                    amd_callback: str | None = None) -> PlacedCall:
        """Place a call whose TwiML comes from `url`. With `amd_callback`, Twilio tells it
        asynchronously whether a person or an answering machine picked up (after the beep)."""
        options = {}
        if amd_callback:
            options = {"machine_detection": "DetectMessageEnd", "async_amd": "true",
                       "async_amd_status_callback": amd_callback, "async_amd_status_callback_method": "POST"}
        call = self._do("create call", lambda: self._client.calls.create(
            to=to, from_=from_, url=url, method="POST", status_callback=status_callback,
            status_callback_method="POST", status_callback_event=["initiated", "ringing", "answered", "completed"],
            **options))
        return PlacedCall(call_sid=call.sid, status=str(call.status or "queued"))

    def update_twiml(self, call_sid: str, twiml: str) -> None:
        """Replace what a live call is doing (its media stream stops) with `twiml`."""
        self._do("update call", lambda: self._client.calls(call_sid).update(twiml=twiml))

    def hangup(self, call_sid: str) -> None:
        self._do("hang up", lambda: self._client.calls(call_sid).update(status="completed"))

    def start_recording(self, call_sid: str, status_callback: str) -> str:
        """Record both channels of a live call; returns the recording's sid."""
        recording = self._do("start recording", lambda: self._client.calls(call_sid).recordings.create(
            recording_channels="dual", recording_status_callback=status_callback,
            recording_status_callback_method="POST", recording_status_callback_event=["completed", "absent"]))
        return recording.sid

    @staticmethod
    def _do(what: str, request):
        try:
            return request()
        except TwilioRestException as exc:
            log.warning("Twilio refused", extra={"what": what, "status": exc.status, "code": exc.code,
                                                 "error": exc.msg})
            raise TwilioRestError(str(exc.msg), exc.status) from None
        except (TwilioException, requests.RequestException, OSError) as exc:
            log.warning("Twilio unreachable", extra={"what": what, "error": str(exc)})
            raise TwilioRestError(f"Twilio could not be reached: {exc}") from None
