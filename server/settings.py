"""The server's configuration: one frozen object, read from the environment once.

Every variable of the SPEC's table is here, plus the call-timing knobs that tests
shorten. Invalid values raise `SettingsError` naming the variable.
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping
from urllib.parse import urlsplit

INSTANCE_DIR = Path(__file__).resolve().parent.parent / "instance"


class SettingsError(ValueError):
    """A configuration value is missing or malformed; the message names the variable."""


@dataclass(frozen=True)
class CallTiming:
    """Per-call timing rules. Defaults are the production values."""

    session_update_retry_s: float = 3.0
    session_update_timeout_s: float = 8.0
    greeting_protect_ms: int = 500
    # Speech that starts in the protected start of the greeting cuts it only if it lasts
    # this long: VAD says "stopped" only after its silence window, so we wait for that.
    greeting_noise_max_ms: int = 300
    realtime_connect_timeout_s: float = 5.0
    # How far ahead of the caller's playout the pacer may send, to absorb jitter.
    tx_lead_ms: int = 60
    stream_token_ttl_s: int = 600


@dataclass(frozen=True)
class Settings:
    database_url: str = f"sqlite:///{INSTANCE_DIR / 'app.db'}"
    openai_api_key: str = ""
    openai_realtime_url: str = "wss://api.openai.com/v1/realtime"
    openai_realtime_model: str = "gpt-realtime"
    openai_base_url: str | None = None
    twilio_account_sid: str = ""
    twilio_auth_token: str = ""
    public_base_url: str | None = None
    admin_api_token: str = ""
    log_level: str = "INFO"
    log_levels: Mapping[str, str] = field(default_factory=dict)
    # Signs the per-call stream token. Must be the same in every worker and host.
    secret_key: str = ""
    timing: CallTiming = field(default_factory=CallTiming)

    @property
    def realtime_ws_url(self) -> str:
        sep = "&" if "?" in self.openai_realtime_url else "?"
        return f"{self.openai_realtime_url}{sep}model={self.openai_realtime_model}"

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

        twilio_auth_token = get("TWILIO_AUTH_TOKEN", "")
        openai_api_key = get("OPENAI_API_KEY", "")
        secret_key = get("SECRET_KEY") or _derived_secret(twilio_auth_token, openai_api_key)

        return cls(
            database_url=get("DATABASE_URL", defaults.database_url),
            openai_api_key=openai_api_key,
            openai_realtime_url=realtime_url,
            openai_realtime_model=get("OPENAI_REALTIME_MODEL", defaults.openai_realtime_model),
            openai_base_url=get("OPENAI_BASE_URL"),
            twilio_account_sid=get("TWILIO_ACCOUNT_SID", ""),
            twilio_auth_token=twilio_auth_token,
            public_base_url=public_base_url,
            admin_api_token=get("ADMIN_API_TOKEN", ""),
            log_level=log_level,
            log_levels=log_levels,
            secret_key=secret_key,
        )


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
            with open(path, "x") as fh:
                fh.write(key)
        except FileExistsError:
            return path.read_text().strip()
        return key
