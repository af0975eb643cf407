"""The server's configuration: one frozen object, read from the environment once.

Every variable of the SPEC's table is here, plus the call-timing knobs that tests
shorten. Invalid values raise `SettingsError` naming the variable.
"""
from __future__ import annotations

import dataclasses
import hashlib
import ipaddress
import os
import re
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping
from urllib.parse import quote, urlsplit

INSTANCE_DIR = Path(__file__).resolve().parent.parent / "instance"


def realtime_url(base_url: str, model: str) -> str:
    """The Realtime websocket URL for `model` (`?model=`, escaped), for the server's default model
    and a business's own alike: a connection opened ahead for one is used only if they agree."""
    sep = "&" if "?" in base_url else "?"
    return f"{base_url}{sep}model={quote(model, safe='')}"


class SettingsError(ValueError):
    """A configuration value is missing or malformed; the message names the variable."""


@dataclass(frozen=True)
class CallTiming:
    """Per-call timing rules. Defaults are the production values."""

    session_update_retry_s: float = 3.0
    session_update_timeout_s: float = 8.0
    greeting_protect_ms: int = 500
    # Twilio sends a frame every 20 ms; a stream silent this long is dead.
    twilio_idle_s: float = 15.0
    # Speech that starts in the protected start of the greeting cuts it only if it lasts
    # this long: VAD says "stopped" only after its silence window, so we wait for that.
    greeting_noise_max_ms: int = 300
    # Barge-in, hold then decide: the agent is held while the caller speaks over it. Speech longer
    # than this (its `speech_stopped` not in by then and the VAD's silence window) takes the turn;
    # shorter speech waits, from its `speech_stopped`, at most the second figure for its transcript,
    # which lets the agent go on if it is a backchannel (or empty), and cuts it otherwise or if late.
    barge_in_hold_ms: int = 600
    barge_in_transcript_wait_ms: int = 700
    realtime_connect_timeout_s: float = 5.0
    # A Realtime socket lost mid-call is reconnected once, the attempt bounded by this.
    realtime_reconnect_timeout_s: float = 1.5
    # With no frame from the Realtime API this long, it is pinged; a pong (or any frame) must
    # follow within the second figure, or the socket is taken for dropped.
    realtime_ping_after_s: float = 5.0
    realtime_pong_timeout_s: float = 3.0
    # A response that shows no event this long is cancelled and counted as a stall.
    response_stall_s: float = 10.0
    # How far ahead of the caller's playout the pacer may send, to absorb jitter: the loop's own
    # too (at 100 calls arriving 40 a second, 60 ms let 80-110 gaps a run through, 100 none). What
    # a barge-in that holds rather than clears lets the caller hear of the agent, at most.
    tx_lead_ms: int = 100
    # From the webhook's stream TwiML to the stream's `start`: the stream token expires then, and
    # a call whose stream has not started stops holding a slot (end reason `no_stream`).
    stream_start_timeout_s: float = 30.0
    # Beyond that timeout, the time allowed for a stream that started just in time to have its
    # `stream_sid` written (the call's journal does it within a second, more on a busy worker).
    stream_start_margin_s: float = 10.0
    # Caller silence (not counting while the agent speaks) before the agent asks whether they are
    # still there; the same again without speech and the agent says goodbye (end reason `silence`).
    silence_s: float = 8.0
    max_call_s: float = 600.0  # then a polite close, end reason `max_duration`
    # The longest wait for the caller to hear the agent's goodbye before the line is closed anyway.
    goodbye_timeout_s: float = 15.0
    # Keypad digits pressed within this gap of each other reach the model as one text item.
    dtmf_gap_ms: int = 700
    transfer_ring_s: int = 25  # how long <Dial> rings the human before the call ends politely
    # Outbound: the longest the agent's first words wait for Twilio's answering machine detection
    # (a person is usually told apart within 2-4 s; a machine only after its beep, often later).
    amd_wait_s: float = 4.0
    # A call row still "live" this long after its maximum duration is a crashed worker's: it no
    # longer holds a slot against the concurrent call limits.
    stale_call_margin_s: float = 120.0


@dataclass(frozen=True)
class PostCall:
    """After-call jobs (services/post_call). Defaults are the production values; tests shorten the waits."""

    workers: int = 2  # job greenlets per process; 0 runs none in this process
    model: str = "gpt-4.1-mini"  # summary and extraction
    transcribe_model: str = "whisper-1"  # needs segment timestamps (verbose_json) to order the two channels
    poll_s: float = 1.0
    # A claimed job not finished by then is taken over by another worker; longer than the
    # slowest job (the request timeouts below, run two at a time).
    lease_s: float = 300.0
    max_attempts: int = 6
    backoff_s: float = 10.0  # before the 2nd attempt; doubles each time, capped
    backoff_max_s: float = 1800.0
    request_timeout_s: float = 90.0  # one OpenAI request (a transcription of a long call is the slowest)
    webhook_timeout_s: float = 10.0
    # How long after the call the job waits for Twilio's recording before using the live turns,
    # and how often it looks meanwhile.
    recording_wait_s: float = 60.0
    recording_recheck_s: float = 5.0


@dataclass(frozen=True)
class Settings:
    database_url: str = f"sqlite:///{INSTANCE_DIR / 'app.db'}"
    openai_api_key: str = ""
    openai_realtime_url: str = "wss://api.openai.com/v1/realtime"
    openai_realtime_model: str = "gpt-realtime"
    # Realtime models a business may choose beyond those the openai package lists (and the default).
    openai_realtime_extra_models: tuple[str, ...] = ()
    openai_base_url: str | None = None
    twilio_account_sid: str = ""
    twilio_auth_token: str = ""
    public_base_url: str | None = None
    admin_api_token: str = ""
    # False only by TWILIO_SIGNATURE_CHECK=off (development): then, without TWILIO_AUTH_TOKEN,
    # unsigned webhooks and streams are let in. A token set is always checked.
    twilio_signature_check: bool = True
    # The address the server listens on (app.py, gunicorn.conf.py): the admin API without a
    # token answers only when it is loopback, since behind a local proxy every peer looks local.
    host: str = "0.0.0.0"
    # Host header names the API answers to (DNS rebinding); empty means the loopback names
    # and PUBLIC_BASE_URL's host.
    allowed_hosts: tuple[str, ...] = ()
    log_level: str = "INFO"
    log_levels: Mapping[str, str] = field(default_factory=dict)
    # Signs the per-call stream token. Must be the same in every worker and host.
    secret_key: str = ""
    # Live calls at once across every worker and host sharing the database (businesses have their own cap).
    max_concurrent_calls: int = 50
    # The longest a Twilio webhook waits for the database (a lock, a statement; a second more for a
    # connection): then the caller hears an apology rather than Twilio's own error message, and a
    # callback's write is kept for a retry. Background work waits longer (services/store/db.py).
    webhook_db_wait_s: float = 3.0
    # Twilio's REST API (outbound calls, live call updates); tests point it at a local fake.
    twilio_api_base_url: str = "https://api.twilio.com"
    # On SIGTERM, how long live calls may go on by themselves before each is told to close with
    # a goodbye (end reason `shutdown`); gunicorn's graceful_timeout must cover it and the goodbye.
    shutdown_drain_s: float = 30.0
    # Business webhooks go to https on public addresses; these open plain http and loopback or
    # private targets, for development and tests only.
    webhook_allow_http: bool = False
    webhook_allow_private: bool = False
    # Requests to /api per key (the admin token counts as one key), and failed sign-ins (401) per
    # client address: past it, that address gets 429 for everything until the window moves on.
    # limits' notation: "120 per minute", "10/minute;100/hour".
    api_rate_limit: str = "120 per minute"
    api_auth_failure_limit: str = "10 per minute"
    # Where the rate limit counts live: this process's memory by default (each worker counts for
    # itself), or a shared store such as redis://host:6379 (its client package installed).
    rate_limit_storage_url: str = "memory://"
    # Reverse proxies in front of the server whose X-Forwarded-For is believed (the client address
    # for rate limits, the audit log and loopback checks); 0 believes none.
    trusted_proxies: int = 0
    # Realtime connections each process keeps open ahead of calls (services/realtime_pool.py), while
    # calls come: each waits at most `realtime_pool_idle_s`, and the pool empties after
    # `realtime_pool_warm_s` without a call. 0 opens each call's connection when its stream arrives.
    # When calls come faster than it refills, it grows, up to `realtime_pool_max`.
    realtime_pool_size: int = 2
    realtime_pool_max: int = 16
    realtime_pool_idle_s: float = 20.0
    realtime_pool_warm_s: float = 300.0
    # Bearer token for /metrics; unset, /metrics answers as the API without a token does
    # (loopback peers of a server that listens on loopback only).
    metrics_token: str = ""
    timing: CallTiming = field(default_factory=CallTiming)
    post_call: PostCall = field(default_factory=PostCall)

    @property
    def realtime_ws_url(self) -> str:
        """The default model's URL (a business may have its own: services/realtime_settings.py)."""
        return realtime_url(self.openai_realtime_url, self.openai_realtime_model)

    @property
    def unsigned_twilio_allowed(self) -> bool:
        """Webhooks and streams without a signature are let in (development only)."""
        return not self.twilio_auth_token and not self.twilio_signature_check

    @property
    def listens_on_loopback_only(self) -> bool:
        if self.host.strip("[]").lower() == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host.strip("[]")).is_loopback
        except ValueError:
            return False

    @property
    def api_hosts(self) -> frozenset[str]:
        """Host header names (lower case, no port) the admin API answers to."""
        if self.allowed_hosts:
            return frozenset(h.lower() for h in self.allowed_hosts)
        names = {"localhost", "127.0.0.1", "::1"}
        if self.public_base_url:
            names.add((urlsplit(self.public_base_url).hostname or "").lower())
        return frozenset(names)

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    def replace(self, **changes) -> "Settings":
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "Settings":
        env = os.environ if env is None else env
        defaults = cls()

        def get(name: str, default: str | None = None) -> str | None:
            value = env.get(name)
            if value is None or value.strip() == "":
                return default
            return value.strip()

        realtime_url = get("OPENAI_REALTIME_URL", defaults.openai_realtime_url)
        extra_models = tuple(m.strip() for m in get("OPENAI_REALTIME_EXTRA_MODELS", "").split(",") if m.strip())
        for name in extra_models:
            if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", name):
                raise SettingsError(f"OPENAI_REALTIME_EXTRA_MODELS: expected model names, got {name!r}")
        if urlsplit(realtime_url).scheme not in ("ws", "wss"):
            raise SettingsError(f"OPENAI_REALTIME_URL must be a ws:// or wss:// URL, got {realtime_url!r}")

        public_base_url = get("PUBLIC_BASE_URL")
        if public_base_url is not None:
            parts = urlsplit(public_base_url)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise SettingsError(f"PUBLIC_BASE_URL must look like https://host, got {public_base_url!r}")
            public_base_url = public_base_url.rstrip("/")

        log_level = get("LOG_LEVEL", "INFO").upper()
        _check_level("LOG_LEVEL", log_level)
        log_levels = _parse_log_levels(get("LOG_LEVELS", ""))

        openai_base_url = get("OPENAI_BASE_URL")
        if openai_base_url is not None and urlsplit(openai_base_url).scheme not in ("http", "https"):
            raise SettingsError(f"OPENAI_BASE_URL must be an http:// or https:// URL, got {openai_base_url!r}")
        post_call = PostCall(
            workers=_number(get, "POST_CALL_WORKERS", int, defaults.post_call.workers, low=0, high=64),
            model=get("POST_CALL_MODEL", defaults.post_call.model),
            transcribe_model=get("TRANSCRIBE_MODEL", defaults.post_call.transcribe_model),
            poll_s=_number(get, "JOB_POLL_S", float, defaults.post_call.poll_s, low=0.01, high=60),
            lease_s=_number(get, "JOB_LEASE_S", float, defaults.post_call.lease_s, low=1, high=86400),
            max_attempts=_number(get, "JOB_MAX_ATTEMPTS", int, defaults.post_call.max_attempts, low=1, high=50),
            backoff_s=_number(get, "JOB_BACKOFF_S", float, defaults.post_call.backoff_s, low=0.01, high=86400),
        )

        twilio_api_base_url = get("TWILIO_API_BASE_URL", defaults.twilio_api_base_url).rstrip("/")
        parts = urlsplit(twilio_api_base_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise SettingsError(f"TWILIO_API_BASE_URL must look like https://host, got {twilio_api_base_url!r}")
        timing = CallTiming(
            silence_s=_number(get, "CALL_SILENCE_S", float, defaults.timing.silence_s, low=1, high=600),
            max_call_s=_number(get, "CALL_MAX_DURATION_S", float, defaults.timing.max_call_s, low=10, high=4 * 3600),
            stream_start_timeout_s=_number(get, "STREAM_START_TIMEOUT_S", float,
                                           defaults.timing.stream_start_timeout_s, low=1, high=3600),
        )

        signature_check = get("TWILIO_SIGNATURE_CHECK", "on").lower()
        if signature_check not in ("on", "off"):
            raise SettingsError(f"TWILIO_SIGNATURE_CHECK must be on or off, got {signature_check!r}")
        host = get("HOST", defaults.host)
        allowed_hosts = tuple(h.strip().lower() for h in get("ALLOWED_HOSTS", "").split(",") if h.strip())
        for name in allowed_hosts:
            if "/" in name or " " in name:
                raise SettingsError(f"ALLOWED_HOSTS: expected host names, got {name!r}")

        api_rate_limit = _rate_limit(get, "API_RATE_LIMIT", defaults.api_rate_limit)
        api_auth_failure_limit = _rate_limit(get, "API_AUTH_FAILURE_LIMIT", defaults.api_auth_failure_limit)
        rate_limit_storage_url = get("RATE_LIMIT_STORAGE_URL", defaults.rate_limit_storage_url)
        if "://" not in rate_limit_storage_url:
            raise SettingsError(f"RATE_LIMIT_STORAGE_URL must be a URL such as memory:// or redis://host:6379, "
                                f"got {rate_limit_storage_url!r}")

        twilio_auth_token = get("TWILIO_AUTH_TOKEN", "")
        openai_api_key = get("OPENAI_API_KEY", "")
        secret_key = get("SECRET_KEY") or _derived_secret(twilio_auth_token, openai_api_key)

        return cls(
            database_url=get("DATABASE_URL", defaults.database_url),
            openai_api_key=openai_api_key,
            openai_realtime_url=realtime_url,
            openai_realtime_model=get("OPENAI_REALTIME_MODEL", defaults.openai_realtime_model),
            realtime_pool_size=_number(get, "REALTIME_POOL_SIZE", int, defaults.realtime_pool_size, low=0, high=50),
            realtime_pool_max=_number(get, "REALTIME_POOL_MAX", int, defaults.realtime_pool_max, low=0, high=100),
            realtime_pool_idle_s=_number(get, "REALTIME_POOL_IDLE_S", float, defaults.realtime_pool_idle_s,
                                         low=1, high=600),
            realtime_pool_warm_s=_number(get, "REALTIME_POOL_WARM_S", float, defaults.realtime_pool_warm_s,
                                         low=1, high=86400),
            openai_realtime_extra_models=extra_models,
            openai_base_url=openai_base_url,
            twilio_account_sid=get("TWILIO_ACCOUNT_SID", ""),
            twilio_auth_token=twilio_auth_token,
            public_base_url=public_base_url,
            admin_api_token=get("ADMIN_API_TOKEN", ""),
            twilio_signature_check=signature_check == "on",
            host=host,
            allowed_hosts=allowed_hosts,
            log_level=log_level,
            log_levels=log_levels,
            secret_key=secret_key,
            max_concurrent_calls=_number(get, "MAX_CONCURRENT_CALLS", int, defaults.max_concurrent_calls,
                                         low=1, high=100_000),
            webhook_db_wait_s=_number(get, "WEBHOOK_DB_WAIT_S", float, defaults.webhook_db_wait_s, low=0.1, high=10),
            twilio_api_base_url=twilio_api_base_url,
            shutdown_drain_s=_number(get, "SHUTDOWN_DRAIN_S", float, defaults.shutdown_drain_s, low=0, high=4 * 3600),
            webhook_allow_http=_switch(get, "WEBHOOK_ALLOW_HTTP"),
            webhook_allow_private=_switch(get, "WEBHOOK_ALLOW_PRIVATE"),
            api_rate_limit=api_rate_limit,
            api_auth_failure_limit=api_auth_failure_limit,
            rate_limit_storage_url=rate_limit_storage_url,
            trusted_proxies=_number(get, "TRUSTED_PROXIES", int, defaults.trusted_proxies, low=0, high=10),
            metrics_token=get("METRICS_TOKEN", ""),
            timing=timing,
            post_call=post_call,
        )


def _number(get, name: str, kind: type, default, *, low, high):
    text = get(name)
    if text is None:
        return default
    try:
        value = kind(text)
    except ValueError:
        raise SettingsError(f"{name} must be {'an integer' if kind is int else 'a number'}, got {text!r}") from None
    if not low <= value <= high:
        raise SettingsError(f"{name} must be from {low} to {high}, got {text!r}")
    return value


def _rate_limit(get, name: str, default: str) -> str:
    text = get(name)
    if text is None:
        return default
    # Here, not at the top: `limits` takes a tenth of a second to import, and processes without
    # the API (the post-call workers) read these settings too.
    from limits import parse_many

    try:
        parse_many(text)
    except ValueError:
        raise SettingsError(f"{name} must be a rate such as '120 per minute' or '10/minute;100/hour', "
                            f"got {text!r}") from None
    return text


def _switch(get, name: str) -> bool:
    text = (get(name) or "off").lower()
    if text not in ("on", "off"):
        raise SettingsError(f"{name} must be on or off, got {text!r}")
    return text == "on"


_LEVELS = ("CRITICAL", "ERROR", "WARNING", "INFO", "DEBUG")


def _check_level(name: str, level: str) -> None:
    if level not in _LEVELS:
        raise SettingsError(f"{name}: unknown level {level!r}; use one of {', '.join(_LEVELS)}")


def _parse_log_levels(text: str) -> dict[str, str]:
    levels: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        area, sep, level = part.partition("=")
        if not sep or not area.strip():
            raise SettingsError(f"LOG_LEVELS: expected area=LEVEL, got {part!r}")
        level = level.strip().upper()
        _check_level(f"LOG_LEVELS ({area.strip()})", level)
        levels[area.strip()] = level
    return levels


def _derived_secret(*material: str) -> str:
    """A signing key every worker agrees on without configuration.

    Derived from the credentials when there are any; otherwise kept in the instance
    folder so that all workers of one host share it.
    """
    joined = "\0".join(m for m in material if m)
    if joined:
        return hashlib.sha256(b"stream-token\0" + joined.encode()).hexdigest()
    path = INSTANCE_DIR / "secret_key"
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        INSTANCE_DIR.mkdir(parents=True, exist_ok=True)
        key = secrets.token_hex(32)
        try:
            # Owner-only: the key signs every stream token.
            with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as fh:
                fh.write(key)
        except FileExistsError:
            return path.read_text().strip()
        return key
