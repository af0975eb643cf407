"""Backchannels: what a caller says over the agent to show they are listening, not to take the turn.

Pure. A transcript is a backchannel when every one of its words, normalised, is a backchannel word
(the defaults below or a business's own); one without words (a cough, a breath the transcription
gave as "" or "...") is one too: nothing in it takes the turn. Normalising drops niqqud and cantillation
(and any other combining mark), punctuation and case, reads the maqaf as a space, and squeezes a
drawn-out letter to one ("אהההה", "mmm", "כןןן"), so that the lists hold one plain spelling each.

"רגע" is not a default: said alone over the agent it means "wait", and the agent must stop.
"""
from __future__ import annotations

import re
import unicodedata
from typing import Iterable

# Hebrew first, as callers say them; then the English that Israeli callers mix in.
DEFAULT_WORDS = (
    "כן", "אה", "אהה", "אהא", "אמ", "הממ", "מממ", "אוקיי", "אוקי", "בסדר", "נכון", "ברור", "יופי",
    "סבבה", "טוב", "או", "אוה", "וואו", "מעולה", "הא",
    "ok", "okay", "yes", "yeah", "yep", "yup", "uh-huh", "mhm", "mm-hmm", "hmm", "mm", "um", "uh", "right", "sure",
)

_WORD = re.compile(r"\w+(?:['\-]\w+)*")
_DRAWN_OUT = re.compile(r"(\w)\1+")


def normalise(text: str) -> list[str]:
    """The words of `text`, in the one spelling the lists use."""
    decomposed = unicodedata.normalize("NFKD", text)
    plain = "".join(ch for ch in decomposed if not unicodedata.combining(ch)).replace("\u05be", " ").casefold()
    return [_DRAWN_OUT.sub(r"\1", word) for word in _WORD.findall(plain)]


def word_set(extra: Iterable[str] = ()) -> frozenset[str]:
    """The defaults and a business's own words (each entry may hold several), normalised."""
    return frozenset(word for entry in (*DEFAULT_WORDS, *extra) for word in normalise(entry))


DEFAULT_SET = word_set()


def is_backchannel(transcript: str, words: frozenset[str] = DEFAULT_SET) -> bool:
    return all(word in words for word in normalise(transcript))
