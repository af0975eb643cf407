"""Who may talk to us: Twilio request signatures, the per-call stream token, bearer tokens."""
from __future__ import annotations

import hashlib
import hmac
import ipaddress
import time
from dataclasses import dataclass

from twilio.request_validator import RequestValidator

# Said whenever a webhook or stream is refused for want of a token to check it with.
NO_TOKEN_HINT = "set TWILIO_AUTH_TOKEN, or TWILIO_SIGNATURE_CHECK=off for development"
SIGNATURE_CHECK_OFF_WARNING = ("TWILIO_SIGNATURE_CHECK=off: webhooks and media streams are accepted unsigned; "
                               "set TWILIO_AUTH_TOKEN (and remove TWILIO_SIGNATURE_CHECK) to turn the check on")


def signed_url(public_base_url: str | None, request_url: str, full_path: str) -> str:
    """The URL Twilio signed: behind a proxy it is the public one, not the one we see."""
    if public_base_url:
        # Flask's full_path ends in "?" when there is no query string.
        return public_base_url + full_path.removesuffix("?")
    return request_url


def twilio_signature_valid(auth_token: str, url: str, params: dict, signature: str | None) -> bool:
    if not signature:
        return False
    return RequestValidator(auth_token).validate(url, params, signature)


@dataclass(frozen=True)
class StreamToken:
    """HMAC over what it vouches for (the stream's parameters, `StreamParameters.signed_text`)
    and an expiry; put in the TwiML, checked on the stream's `start`."""

    secret: str

    def issue(self, subject: str, ttl_s: int, now: float | None = None) -> str:
        return self.issue_until(subject, (time.time() if now is None else now) + ttl_s)

    def issue_until(self, subject: str, expires_at: float) -> str:
        """A token good until `expires_at` (epoch seconds), rounded down: never later."""
        expires = int(expires_at)
        return f"{expires}.{self._mac(subject, expires)}"

    def verify(self, subject: str, token: str | None, now: float | None = None) -> str | None:
        """None when valid, else why not (for the log line)."""
        if not token or "." not in token:
            return "missing or malformed token"
        expires_text, _, mac = token.partition(".")
        if not (expires_text.isascii() and expires_text.isdigit()) or len(expires_text) > 12:
            return "malformed expiry"
        expires = int(expires_text)
        # As bytes: compare_digest refuses a str with characters outside ASCII.
        if not hmac.compare_digest(mac.encode(errors="replace"), self._mac(subject, expires).encode()):
            return "bad signature"
        if (time.time() if now is None else now) > expires:
            return "expired"
        return None

    def _mac(self, subject: str, expires: int) -> str:
        return hmac.new(self.secret.encode(), f"{subject}\n{expires}".encode(), hashlib.sha256).hexdigest()


def bearer_credential(authorization: str) -> str | None:
    """What follows "Bearer " in an Authorization header; None when it is not a bearer credential."""
    scheme, _, credential = authorization.strip().partition(" ")
    credential = credential.strip()
    return credential if scheme.lower() == "bearer" and credential else None


def same_secret(given: str, expected: str) -> bool:
    """Constant time; as bytes, since compare_digest refuses a str with characters outside ASCII."""
    return hmac.compare_digest(given.encode(errors="replace"), expected.encode())


def loopback_only_refusal(listens_on_loopback_only: bool, peer: str | None, token_name: str) -> str | None:
    """Why a door without its token refuses this peer, or None: it answers loopback peers of a
    server that listens on loopback only (behind a proxy on this host every peer looks local)."""
    if not listens_on_loopback_only:
        return f"{token_name} is not set and the server does not listen on loopback only (HOST)"
    if not is_loopback(peer):
        return f"{token_name} is not set: only loopback peers are answered"
    return None


def host_name(host: str) -> str:
    """The Host header's name, lower case, without its port ("[::1]:5000" is "::1")."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1:].partition("]")[0]
    if host.count(":") == 1:
        return host.partition(":")[0]
    return host


def is_loopback(addr: str | None) -> bool:
    try:
        return addr is not None and ipaddress.ip_address(addr).is_loopback
    except ValueError:
        return False
