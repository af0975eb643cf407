"""What the server's log may hold: at INFO no caller number, keypad digits, transcripts or tool
arguments; at any level no secret (OpenAI key, Twilio auth token, stream token, webhook secret)."""
from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

import pytest
import requests
from twilio.request_validator import RequestValidator

from services import settings as settings_module
from services.logging_setup import LogfmtFormatter, mask_number
from tests.conftest import BUSINESS_NUMBER, CALLER_NUMBER
from tests.fakes.realtime_server import RealtimeScript, Reply, ToolCall
from tests.harness import TEST_TIMING

GREETING = Reply("שלום, הגעתם למספרת הבדיקה, איך אפשר לעזור?", 500)
GOODBYE = Reply("תודה שהתקשרתם, להתראות!", 500)
SAID = "קוראים לי ישראל ותעודת הזהות שלי היא שלוש שלוש שבע"
TOOL_REASON = "the caller asked to end; PIN 9*8#"
DIGITS = "9*8#"
OPENAI_KEY = "sk-privacy-openai-key-0123456789abcdef"
WEBHOOK_SECRET = "whsec_privacy_webhook_secret_0123"
AUTH_TOKEN = "twilio-privacy-auth-token-0123456789"
ROOT = Path(__file__).resolve().parent


class Lines(logging.Handler):
    """The server's log lines as the production formatter writes them (the fakes' own left out)."""

    def __init__(self):
        super().__init__(logging.NOTSET)
        self.setFormatter(LogfmtFormatter())
        self.lines: list[str] = []

    def emit(self, record):
        if not record.pathname.startswith(str(ROOT)):
            self.lines.append(self.format(record))

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


@pytest.fixture
def log_lines():
    handler = Lines()
    logging.getLogger().addHandler(handler)
    yield handler
    logging.getLogger().removeHandler(handler)


def _a_call(h):
    caller = h.call()
    caller.wait_heard(GREETING.audio_ms, timeout=5)
    for digit in DIGITS:
        caller.dtmf(digit)
    caller.wait_quiet(150)
    caller.speak(400)
    caller.wait_closed(timeout=10)
    h.wait_ended(caller.call_sid)
    return caller


def _script():
    return RealtimeScript(responses=[GREETING, Reply("קיבלתי.", 300), ToolCall("end_call", {"reason": TOOL_REASON}),
                                     GOODBYE], caller_transcripts=[SAID])


def test_a_call_at_info_logs_no_caller_number_digits_transcript_or_tool_arguments(make_harness, log_lines):
    h = make_harness(_script(), timing=TEST_TIMING)
    _a_call(h)
    assert log_lines.lines, "the capture saw the server's log"
    text = log_lines.text
    assert CALLER_NUMBER not in text and CALLER_NUMBER[1:] not in text
    assert BUSINESS_NUMBER not in text
    assert DIGITS not in text
    assert SAID not in text and "תעודת הזהות" not in text
    assert TOOL_REASON not in text and "PIN" not in text


def test_secrets_never_reach_the_log_even_at_debug(make_harness, log_lines):
    h = make_harness(_script(), timing=TEST_TIMING, log_level="DEBUG", openai_api_key=OPENAI_KEY,
                     business={"webhook_url": "https://crm.example.com/hooks", "webhook_secret": WEBHOOK_SECRET})
    caller = _a_call(h)
    token = caller.parameters["token"]
    text = log_lines.text
    assert "level=DEBUG" in text, "the capture ran at DEBUG"
    assert OPENAI_KEY not in text and WEBHOOK_SECRET not in text
    assert token and token not in text


def test_the_twilio_auth_token_never_reaches_the_log(make_live_server, settings, log_lines):
    live = make_live_server(settings.replace(log_level="DEBUG", twilio_auth_token=AUTH_TOKEN,
                                             twilio_account_sid="AC" + "0" * 32))
    url = f"{live.base_url}/webhook/incoming_call"
    form = {"CallSid": "CA" + "1" * 32, "From": CALLER_NUMBER, "To": BUSINESS_NUMBER, "Direction": "inbound"}
    refused = requests.post(url, data=form, headers={"X-Twilio-Signature": "forged"}, timeout=5)
    assert refused.status_code == 403
    signed = RequestValidator(AUTH_TOKEN).compute_signature(url, form)
    requests.post(url, data=form, headers={"X-Twilio-Signature": signed}, timeout=5)
    assert "rejected webhook" in log_lines.text
    assert AUTH_TOKEN not in log_lines.text


def test_a_number_is_shown_by_its_last_three_digits():
    assert mask_number("+972501234567") == "…567"
    assert mask_number(None) == "-" and mask_number("12") == "…"
    record = logging.LogRecord("webhooks", logging.INFO, __file__, 1, "call from +972501234567", (), None)
    record.to = "+972300000001"
    line = LogfmtFormatter().format(record)
    assert "+972501234567" not in line and "…567" in line and "to=…001" in line
    record.levelno, record.levelname = logging.DEBUG, "DEBUG"
    assert "+972501234567" in LogfmtFormatter().format(record), "at DEBUG a developer sees the number"


def test_a_generated_secret_key_file_is_readable_by_its_owner_only(tmp_path, monkeypatch):
    monkeypatch.setattr(settings_module, "INSTANCE_DIR", tmp_path / "instance")
    key = settings_module.Settings.from_env({}).secret_key
    path = tmp_path / "instance" / "secret_key"
    assert path.read_text() == key
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert settings_module.Settings.from_env({}).secret_key == key
