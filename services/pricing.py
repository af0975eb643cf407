"""Estimated Realtime cost from a call's token usage, at its model's list prices.

USD per million tokens, from OpenAI's published price list (https://openai.com/api/pricing/ and
https://platform.openai.com/docs/pricing, the Realtime API's rows, as listed in 2025): text in,
cached text in, audio in, cached audio in, text out, audio out. A dated snapshot costs what its
model does unless it has a row of its own. A model the list here does not price (a newer name,
or one the operator allowed) is estimated at its family's prices: a "mini" one at
gpt-realtime-mini's, any other at gpt-realtime's.
"""
from __future__ import annotations

import re

from services.realtime_protocol import Usage

_PRICES: dict[str, tuple[float, float, float, float, float, float]] = {
    "gpt-realtime": (4.0, 0.40, 32.0, 0.40, 16.0, 64.0),
    "gpt-realtime-mini": (0.60, 0.06, 10.0, 0.30, 2.40, 20.0),
    "gpt-4o-realtime-preview": (5.0, 2.50, 40.0, 2.50, 20.0, 80.0),
    # The first snapshot, before the December 2024 price cut.
    "gpt-4o-realtime-preview-2024-10-01": (5.0, 2.50, 100.0, 20.0, 20.0, 200.0),
    "gpt-4o-mini-realtime-preview": (0.60, 0.30, 10.0, 0.30, 2.40, 20.0),
}
_SNAPSHOT = re.compile(r"-\d{4}-\d{2}-\d{2}$")


def prices(model: str) -> tuple[float, float, float, float, float, float]:
    """The model's row: its own, its snapshot's base model's, else its family's."""
    for name in (model, _SNAPSHOT.sub("", model)):
        if name in _PRICES:
            return _PRICES[name]
    return _PRICES["gpt-realtime-mini" if "mini" in model else "gpt-realtime"]


def estimate_cost_usd(model: str, usage: Usage) -> float:
    text_in, cached_text_in, audio_in, cached_audio_in, text_out, audio_out = prices(model)
    total_in = usage.input_text + usage.input_audio
    # Cached tokens are counted inside the input totals (the usage gives them as one number):
    # split between text and audio in proportion, each at its own cached rate.
    cached = min(usage.input_cached, total_in)
    audio_share = usage.input_audio / total_in if total_in else 0.0
    cached_audio = cached * audio_share
    cached_text = cached - cached_audio
    cost = ((usage.input_text - cached_text) * text_in + cached_text * cached_text_in
            + (usage.input_audio - cached_audio) * audio_in + cached_audio * cached_audio_in
            + usage.output_text * text_out + usage.output_audio * audio_out)
    return round(cost / 1_000_000, 6)
