"""Prompts and fixed texts for the work after a call: the summary, the extraction, the
outcome of a call in which the caller never spoke."""
from __future__ import annotations

from prompts.layers import business_name
from prompts.templates import fill, load, sections

# End reasons that mean our side failed, not that the caller left (services.call_session).
_FAILURE_END_REASONS = frozenset({
    "realtime_unavailable", "realtime_session_timeout", "realtime_dropped", "server_error", "business_not_found",
})


def build_summary_prompt(business) -> str:
    """System prompt for the Hebrew summary; the transcript goes in the user message."""
    return fill(load("summary.md"), {"business_name": business_name(business)})[0]


def no_conversation_texts(end_reason: str | None) -> tuple[str, str]:
    """(summary, outcome) in Hebrew for a call in which the caller said nothing."""
    texts = dict(sections("no_conversation.he.md"))
    if end_reason == "caller_hangup":
        outcome = texts["caller_hangup"]
    elif end_reason in _FAILURE_END_REASONS:
        outcome = texts["failure"]
    else:
        outcome = texts["other"]
    return fill(texts["Summary"], {"outcome": outcome})[0], outcome
