"""TwiML documents the webhooks answer, built with the twilio library."""
from __future__ import annotations

from typing import Mapping

from twilio.twiml.voice_response import Connect, Dial, Gather, VoiceResponse

HEBREW = "he-IL"
HEBREW_VOICE = "Google.he-IL-Standard-A"

APOLOGY_UNAVAILABLE = "מצטערים, לא נוכל לטפל בשיחה כרגע. אנא נסו שוב מאוחר יותר. תודה ולהתראות."
APOLOGY_UNKNOWN_NUMBER = "מצטערים, המספר שחייגתם אינו פעיל כרגע. להתראות."
BUSY = "מצטערים, כל הקווים שלנו תפוסים כרגע. אנא נסו שוב בעוד כמה דקות. תודה ולהתראות."
TRANSFER_FAILED = "מצטערים, לא הצלחנו להעביר את השיחה כרגע. נחזור אליכם בהקדם. תודה ולהתראות."
FAULT_TRANSFER = "מצטערים, יש לנו תקלה רגעית. אנחנו מעבירים אתכם לנציג."
PRESS_TO_ACCEPT = "לקבלת השיחה הקש 1."


def connect_stream(*, action_url: str, stream_url: str, status_url: str, parameters: Mapping[str, str]) -> str:
    response = VoiceResponse()
    connect = Connect(action=action_url, method="POST")
    stream = connect.stream(url=stream_url, status_callback=status_url, status_callback_method="POST")
    for name, value in parameters.items():
        stream.parameter(name=name, value=value)
    response.append(connect)
    return str(response)


def dial(number: str, *, caller_id: str | None, timeout_s: int, action_url: str, say: str | None = None) -> str:
    """Hand the call to a person (after `say`, if given); Twilio asks `action_url` what next once
    the dialled leg ends."""
    response = VoiceResponse()
    if say:
        response.say(say, language=HEBREW, voice=HEBREW_VOICE)
    options = {"caller_id": caller_id} if caller_id else {}
    dial_verb = Dial(action=action_url, method="POST", timeout=timeout_s, **options)
    dial_verb.number(number)
    response.append(dial_verb)
    return str(response)


def warm_dial(number: str, *, caller_id: str | None, timeout_s: int, action_url: str, whisper_url: str) -> str:
    """Hand the call to a person who first hears `whisper_url`'s TwiML on their own leg."""
    response = VoiceResponse()
    options = {"caller_id": caller_id} if caller_id else {}
    dial_verb = Dial(action=action_url, method="POST", timeout=timeout_s, **options)
    dial_verb.number(number, url=whisper_url, method="POST")
    response.append(dial_verb)
    return str(response)


def whisper(summary: str, *, action_url: str, timeout_s: int) -> str:
    """The person's leg of a warm transfer: the summary, then one key; no key hangs the leg up."""
    response = VoiceResponse()
    gather = Gather(num_digits=1, action=action_url, method="POST", timeout=timeout_s)
    gather.say(f"{summary} {PRESS_TO_ACCEPT}", language=HEBREW, voice=HEBREW_VOICE)
    response.append(gather)
    response.hangup()
    return str(response)


def say_and_hangup(text: str) -> str:
    response = VoiceResponse()
    response.say(text, language=HEBREW, voice=HEBREW_VOICE)
    response.hangup()
    return str(response)


def hangup() -> str:
    response = VoiceResponse()
    response.hangup()
    return str(response)


def empty() -> str:
    return str(VoiceResponse())
