"""The Realtime API's less kind events, through the whole server over loopback.

The fake Realtime API sends what the real one does in the order it does: the caller's
transcript after the `response.created` that answers it, `rate_limits.updated` after each
`response.created`, and, when a test asks, `error` events mid-call, failed transcriptions,
responses that end `failed` or `incomplete`, the session's expiry and a server-side close.
Each test says what the caller hears and what the business finds stored.
"""
import dataclasses
import logging

import pytest

from prompts.tools import call_event
from tests.fakes.realtime_server import FailedTranscript, RealtimeScript, Reply, ServerError
from tests.fakes.waiting import wait_for
from tests.harness import TEST_TIMING

GREETING = Reply("שלום, הגעתם למספרת הבדיקה, איך אפשר לעזור?", 500)
ANSWER = Reply("אנחנו פתוחים מתשע עד שש", 600)
NEXT = Reply("בשמחה, לאיזה יום?", 600)
GOODBYE = Reply("תודה שהתקשרתם, יום נעים ולהתראות!", 700)
ASKED = "מה השעות שלכם?"
THEN = "ביום שלישי בבוקר"
# A goodbye deadline far beyond any test's wait, so that a call closing at it is told apart from
# one closing after the goodbye was heard.
PATIENT_GOODBYE = dataclasses.replace(TEST_TIMING, goodbye_timeout_s=30.0)


def _greeted(h):
    caller = h.call()
    caller.wait_heard(GREETING.audio_ms, timeout=5)
    caller.wait_quiet(150)
    return caller


def _say_and_hear(caller, reply: Reply, speech_ms: int = 500) -> None:
    """The caller speaks, then hears the whole of `reply`."""
    heard = caller.heard_ms
    caller.speak(speech_ms)
    caller.wait_heard(heard + reply.audio_ms, timeout=6)
    caller.wait_quiet(150)


def _warnings(caplog, message: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.levelno >= logging.WARNING and r.getMessage() == message]


def _sent_types(conn) -> list[str]:
    return [e["type"] for e in conn.server_event_list() if e["type"] != "response.output_audio.delta"]


# --- error events ------------------------------------------------------------------------


def test_an_error_mid_call_is_logged_and_the_call_goes_on(make_harness, caplog):
    oops = ServerError(code="invalid_value", message="Invalid value for 'audio_end_ms'.", param="audio_end_ms")
    h = make_harness(RealtimeScript(responses=[GREETING, dataclasses.replace(ANSWER, error=oops), NEXT],
                                    caller_transcripts=[ASKED, THEN]))
    caller = _greeted(h)
    _say_and_hear(caller, ANSWER)
    _say_and_hear(caller, NEXT)  # the session still answers
    caller.stop()

    stored = h.wait_ended(caller.call_sid)
    assert stored.row.end_reason == "caller_hangup"
    assert [t for t in stored.turns if t[0] == "agent"] == [
        ("agent", GREETING.text, False), ("agent", ANSWER.text, False), ("agent", NEXT.text, False)]
    assert stored.row.metrics["realtime_reconnects"] == 0 and len(h.fake.connections) == 1
    logged = _warnings(caplog, "Realtime error")
    assert [(r.code, r.call_sid) for r in logged] == [("invalid_value", caller.call_sid)]
    assert h.fake.invalid_events == [] and h.fake.double_responses == []


# --- failed transcription -----------------------------------------------------------------


def test_a_failed_transcription_is_logged_and_the_caller_is_still_answered(make_harness, caplog):
    h = make_harness(RealtimeScript(responses=[GREETING, ANSWER, NEXT], caller_transcripts=[FailedTranscript(), THEN]))
    caller = _greeted(h)
    _say_and_hear(caller, ANSWER)  # the model heard the audio; only its transcription failed
    _say_and_hear(caller, NEXT)
    caller.stop()

    stored = h.wait_ended(caller.call_sid)
    assert stored.row.end_reason == "caller_hangup"
    assert ("agent", ANSWER.text, False) in stored.turns and ("caller", THEN, False) in stored.turns
    assert len(_warnings(caplog, "caller transcription failed")) == 1
    assert len(h.fake.connections[0].client_events("response.create")) == 3


def test_a_failed_transcription_is_stored_as_an_empty_caller_turn_in_its_place(make_harness):
    h = make_harness(RealtimeScript(responses=[GREETING, ANSWER, NEXT], caller_transcripts=[FailedTranscript(), THEN]))
    caller = _greeted(h)
    _say_and_hear(caller, ANSWER)
    _say_and_hear(caller, NEXT)
    caller.stop()

    stored = h.wait_ended(caller.call_sid)
    assert stored.turns == [("agent", GREETING.text, False), ("caller", "", False), ("agent", ANSWER.text, False),
                            ("caller", THEN, False), ("agent", NEXT.text, False)]


# --- responses that end failed or incomplete -------------------------------------------------


def test_a_response_that_fails_before_speaking_twice_frees_the_gate_and_the_call_goes_on(make_harness, caplog):
    fails = Reply("לא ייאמר", 800, status="failed")
    h = make_harness(RealtimeScript(responses=[GREETING, fails, fails, ANSWER], caller_transcripts=[ASKED, THEN]))
    caller = _greeted(h)
    conn = h.fake.connections[0]
    caller.speak(500)
    wait_for(lambda: len(conn.responses) == 3 and conn.responses[2].status == "failed", 6,
             message="the failed response, and the one asked for once more")
    caller.wait_quiet(150)
    assert len(conn.client_events("response.create")) == 3  # not a third time in a row
    _say_and_hear(caller, ANSWER)  # the caller asks again: the gate is free
    caller.stop()

    stored = h.wait_ended(caller.call_sid)
    assert stored.row.end_reason == "caller_hangup"
    assert stored.turns == [("agent", GREETING.text, False), ("caller", ASKED, False), ("caller", THEN, False),
                            ("agent", ANSWER.text, False)]  # nothing of the failed responses: they said nothing
    assert [r.status for r in _warnings(caplog, "response ended badly")] == ["failed", "failed"]
    assert len(conn.client_events("response.create")) == 4
    assert h.fake.double_responses == [] and stored.row.metrics["realtime_reconnects"] == 0


def test_an_incomplete_response_is_stored_as_far_as_it_was_heard_and_the_call_goes_on(make_harness, caplog):
    cut_short = Reply("אנחנו פתוחים בימים ראשון עד חמישי מתשע בבוקר ועד שש בערב", 1000, status="incomplete",
                      stop_at_ms=500)
    h = make_harness(RealtimeScript(responses=[GREETING, cut_short, NEXT], caller_transcripts=[ASKED, THEN]))
    caller = _greeted(h)
    conn = h.fake.connections[0]
    _say_and_hear(caller, dataclasses.replace(cut_short, audio_ms=500))
    said = conn.responses[1].transcript_sent.strip()  # the words sent before the API stopped it
    assert said and cut_short.text.startswith(said) and said != cut_short.text
    _say_and_hear(caller, NEXT)
    caller.stop()

    stored = h.wait_ended(caller.call_sid)
    assert stored.turns == [("agent", GREETING.text, False), ("caller", ASKED, False), ("agent", said, False),
                            ("caller", THEN, False), ("agent", NEXT.text, False)]
    assert [(r.status, r.why) for r in _warnings(caplog, "response ended badly")] == [
        ("incomplete", "max_output_tokens")]
    assert h.fake.double_responses == []


def test_a_response_to_the_callers_turn_that_fails_without_a_word_is_asked_for_once_more(make_harness):
    h = make_harness(RealtimeScript(responses=[GREETING, Reply("לא ייאמר", 800, status="failed"), ANSWER],
                                    caller_transcripts=[ASKED]))
    caller = _greeted(h)
    caller.speak(500)
    caller.wait_heard(GREETING.audio_ms + ANSWER.audio_ms, timeout=6)  # without speaking again
    caller.stop()
    assert len(h.fake.connections[0].client_events("response.create")) == 3


# --- the caller's goodbye, transcribed late --------------------------------------------------


def test_a_goodbye_transcribed_after_response_created_ends_the_call_once_the_answer_is_heard(make_harness):
    h = make_harness(RealtimeScript(responses=[GREETING, GOODBYE], caller_transcripts=["תודה, ביי"]),
                     timing=PATIENT_GOODBYE)
    caller = _greeted(h)
    caller.speak(400)
    caller.wait_closed(timeout=8)  # long before the goodbye deadline

    conn = h.fake.connections[0]
    sent = _sent_types(conn)
    answer_created = [i for i, t in enumerate(sent) if t == "response.created"][1]
    assert sent.index("conversation.item.input_audio_transcription.completed") > answer_created  # the real order
    segment = max(caller.segments, key=lambda s: s.index)
    assert segment.heard_ms == GOODBYE.audio_ms, "the line closed before the goodbye was heard"
    assert h.wait_ended(caller.call_sid).row.end_reason == "caller_goodbye"


def test_a_goodbye_transcribed_after_its_answer_is_done_still_ends_the_call_once_it_is_heard(make_harness):
    h = make_harness(RealtimeScript(responses=[GREETING, GOODBYE], caller_transcripts=["תודה, ביי"],
                                    transcript_timing="response_done"), timing=PATIENT_GOODBYE)
    caller = _greeted(h)
    caller.speak(400)
    caller.wait_closed(timeout=8)  # the deadline is 30 s away
    segment = max(caller.segments, key=lambda s: s.index)
    assert segment.heard_ms == GOODBYE.audio_ms
    assert h.wait_ended(caller.call_sid).row.end_reason == "caller_goodbye"


# --- rate limits ----------------------------------------------------------------------------


def test_rate_limits_updated_is_ignored_quietly(make_harness, caplog):
    h = make_harness(RealtimeScript(responses=[GREETING, ANSWER], caller_transcripts=[ASKED], rate_limits=True))
    caller = _greeted(h)
    _say_and_hear(caller, ANSWER)
    caller.stop()
    stored = h.wait_ended(caller.call_sid)

    conn = h.fake.connections[0]
    assert len(conn.server_event_list("rate_limits.updated")) == 2  # one after each response.created
    assert stored.turns == [("agent", GREETING.text, False), ("caller", ASKED, False), ("agent", ANSWER.text, False)]
    server_lines = [r for r in caplog.records if r.name in ("realtime", "call") and r.levelno >= logging.WARNING]
    assert server_lines == []
    assert not any("rate_limits" in r.getMessage() for r in caplog.records)


# --- the session's end on the API's side -------------------------------------------------------


def _item_texts(conn) -> list[tuple[str, str]]:
    return [(item["role"], item["content"][0]["text"]) for item in conn.items_created if item.get("type") == "message"]


@pytest.mark.parametrize("fault", ["expire", "close"])
def test_a_session_the_api_ends_mid_answer_is_opened_again_and_the_call_goes_on(make_harness, caplog, fault):
    long_answer = Reply("אנחנו פתוחים בימים ראשון עד חמישי מתשע בבוקר ועד שש בערב", 3000)
    h = make_harness(RealtimeScript(responses=[GREETING, long_answer], caller_transcripts=[ASKED, THEN],
                                    faults={1: fault}, speed=1.0))
    caller = _greeted(h)
    caller.speak(500)
    cut = caller.wait_clear(timeout=8)  # the agent cut off as the session went
    # What the caller got up to the clear (the apology comes after it, on the new session, and may
    # already be arriving by the time this greenlet runs).
    before = sum(s.received_ms for s in caller.segments if s.first_received_at is not None
                 and s.first_received_at <= cut.t)
    first = h.fake.connections[0]
    second = h.fake.wait_for_connection(2, timeout=8)
    if fault == "expire":
        assert first.expired_at is not None and first.errors[-1]["code"] == "session_expired"
    else:
        assert first.closed_by_server_at is not None
    second.wait_for_client_event("response.create", timeout=8)  # the agent was cut off: it apologises
    assert second.client_events("session.update")[0]["session"] == first.client_events("session.update")[0]["session"]
    said = _item_texts(second)
    assert said[:2] == [("assistant", GREETING.text), ("user", ASKED)] and said[-1] == (
        "system", call_event("Reconnected"))
    wait_for(lambda: caller.received_ms >= before + 500, timeout=6,
             message=lambda: f"the apology's audio (received {caller.received_ms} ms, {before} before it)")
    caller.wait_quiet(150)
    _say_and_hear(caller, Reply(audio_ms=500))  # and the next turn is answered on the new session
    assert len(second.client_events("response.create")) == 2
    caller.stop()

    stored = h.wait_ended(caller.call_sid)
    assert stored.row.end_reason == "caller_hangup" and stored.row.metrics["realtime_reconnects"] == 1
    assert len(_warnings(caplog, "Realtime session lost: reconnecting")) == 1
    assert h.fake.invalid_events == []


def test_a_session_that_expires_while_the_caller_listens_is_opened_again_quietly(make_harness):
    h = make_harness(RealtimeScript(responses=[GREETING], caller_transcripts=[ASKED]))
    caller = _greeted(h)
    h.fake.connections[0].expire()  # once the greeting is heard, however long that took
    second = h.fake.wait_for_connection(2, timeout=8)
    assert h.fake.connections[0].errors[-1]["code"] == "session_expired"
    second.wait_for_client_event("conversation.item.create", timeout=5)  # the conversation so far
    assert _item_texts(second)[0] == ("assistant", GREETING.text)
    caller.wait_quiet(150)
    _say_and_hear(caller, Reply(audio_ms=500))  # the caller's turn is answered on the new session
    caller.stop()
    stored = h.wait_ended(caller.call_sid)
    assert stored.row.end_reason == "caller_hangup" and stored.row.metrics["realtime_reconnects"] == 1
    assert ("caller", ASKED, False) in stored.turns
