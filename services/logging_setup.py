"""The one logging configuration: logfmt lines, one level switch, per-area overrides.

Areas are logger names (`call`, `rx`, `tx`, `realtime`, `store`, `webhooks`, `api`,
`prompts`, ...). Lines about a call carry `call_sid=`: use `call_logger(area, sid)`.

Privacy: above DEBUG no line carries a full phone number (shown as `…567`, its last three
digits: `mask_number`, and every E.164-looking run in a line is masked the same way as a
net), keypad digits, tool arguments or transcripts. Secrets are never logged at any level.
"""
from __future__ import annotations

import logging
import re
import sys
import time
from typing import Mapping

# "+" and 6 or more digits: E.164 as Twilio sends it (call sids and ids carry no "+").
_E164 = re.compile(r"\+\d{6,15}")


def mask_number(number: str | None) -> str:
    """A phone number as logs show it: only its last three digits."""
    if not number:
        return "-"
    digits = "".join(c for c in number if c.isdigit())
    return "…" + digits[-3:] if len(digits) > 3 else "…"


_RESERVED = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}


class LogfmtFormatter(logging.Formatter):
    """`ts=… level=… area=… call_sid=… msg="…" key=value` on one line."""

    def format(self, record: logging.LogRecord) -> str:
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        parts = [
            f"ts={ts}.{int(record.msecs):03d}Z",
            f"level={record.levelname}",
            f"area={record.name}",
            f"call_sid={getattr(record, 'call_sid', '-')}",
            f"msg={_quote(record.getMessage())}",
        ]
        for key, value in record.__dict__.items():
            if key not in _RESERVED and key != "call_sid" and not key.startswith("_"):
                parts.append(f"{key}={_quote(str(value))}")
        if record.exc_info:
            parts.append(f"exc={_quote(self.formatException(record.exc_info))}")
        line = " ".join(parts)
        if record.levelno > logging.DEBUG:
            line = _E164.sub(lambda m: mask_number(m.group()), line)
        return line


def _quote(value: str) -> str:
    if value and not any(c in value for c in ' "=\n\t'):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


class CallLogger(logging.LoggerAdapter):
    """Adds the call's sid to every line, merging per-line extras."""

    def process(self, msg, kwargs):
        extra = kwargs.get("extra")
        kwargs["extra"] = {**self.extra, **extra} if extra else self.extra
        return msg, kwargs


def call_logger(area: str, call_sid: str | None) -> CallLogger:
    return CallLogger(logging.getLogger(area), {"call_sid": call_sid or "-"})


_HANDLER_NAME = "hebrew-agent"


def configure_logging(level: str = "INFO", levels: Mapping[str, str] | None = None) -> None:
    """Install the single stderr handler (idempotent) and the area levels."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if handler.get_name() == _HANDLER_NAME:
            root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(LogfmtFormatter())
    root.addHandler(handler)
    root.setLevel(level)
    # No line shows them. The thread's name would cost each greenlet that logs a dummy thread
    # object (gevent's threading), kept as long as the greenlet.
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    # Alembic narrates every migration step at INFO; its warnings are what matter.
    logging.getLogger("alembic").setLevel(max(logging.WARNING, logging.getLevelName(level)))
    # The OpenAI SDK's HTTP client logs every request at INFO; the jobs log what they did.
    logging.getLogger("httpx2").setLevel(max(logging.WARNING, logging.getLevelName(level)))
    # Twilio's client logs every request's URL (call sids) at INFO; its callers log what they did.
    logging.getLogger("twilio.http_client").setLevel(max(logging.WARNING, logging.getLevelName(level)))
    for area, area_level in (levels or {}).items():
        logging.getLogger(area).setLevel(area_level)
