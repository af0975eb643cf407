"""Prompts and fixed texts for the work after a call: the summary, the extraction, the
outcome of a call in which the caller never spoke."""
from __future__ import annotations

from prompts.layers import business_name
from prompts.templates import fill, load, sections


def build_summary_prompt(business) -> str:
    """System prompt for the Hebrew summary; the transcript goes in the user message."""
    return fill(load("summary.md"), {"business_name": business_name(business)})[0]


def no_conversation_texts(why: str) -> tuple[str, str]:
    """(summary, outcome) in Hebrew for a call in which the caller said nothing; `why` is
    "caller_hangup", "failure" (our side failed) or "other"."""
    texts = dict(sections("no_conversation.he.md"))
    outcome = texts[why]
    return fill(texts["Summary"], {"outcome": outcome})[0], outcome
