"""A caller who hangs up while the agent is speaking: the agent's turn is stored as cut, with only
the words the caller heard (as barge-in stores a cut turn), not the whole answer."""
import pytest

from tests.fakes.realtime_server import RealtimeScript, Reply

GREETING = Reply("שלום, הגעתם למספרת הבדיקה", 600)
ASKED = "מה יש לכם השבוע?"
# Five seconds of audio and its whole transcript arrive at once (the fake streams faster than
# real time): what the caller heard is known only from the playback clock.
LONG_REPLY = Reply("יש לנו תורים פנויים ביום ראשון בבוקר, ביום שני אחר הצהריים, וביום רביעי בערב, "
                   "ומחיר תספורת הוא שמונים שקלים, ותספורת ילדים שישים שקלים.", 5000)
HEARD_MS = 1500


@pytest.mark.parametrize("hang_up", ["stop", "vanish"])
def test_a_caller_who_hangs_up_mid_sentence_leaves_the_heard_part_stored_as_cut(make_harness, hang_up):
    h = make_harness(RealtimeScript(responses=[GREETING, LONG_REPLY], caller_transcripts=[ASKED]))
    caller = h.call()
    caller.wait_heard(GREETING.audio_ms, timeout=5)
    caller.wait_quiet(150)
    caller.speak(600)
    caller.wait_heard(GREETING.audio_ms + HEARD_MS, timeout=8)
    if hang_up == "stop":
        caller.stop()  # Twilio's `stop`, then a close
    else:
        caller.close_abruptly()  # no `stop`: the line just goes
    heard_share = (caller.heard_ms - GREETING.audio_ms) / LONG_REPLY.audio_ms

    stored = h.wait_ended(caller.call_sid)
    assert stored.row.end_reason == ("caller_hangup" if hang_up == "stop" else "stream_closed")
    assert stored.turns[:2] == [("agent", GREETING.text, False), ("caller", ASKED, False)]
    assert len(stored.turns) == 3
    speaker, text, interrupted = stored.turns[2]
    assert speaker == "agent" and interrupted
    assert text and LONG_REPLY.text.startswith(text)
    # The transcript cut in proportion to what was heard, at a word: a little less than the
    # caller's share (the word boundary), or a little more (the stop's way to the server).
    stored_share = len(text) / len(LONG_REPLY.text)
    assert heard_share - 0.2 < stored_share < heard_share + 0.25, (stored_share, heard_share)
