"""Estimated Realtime cost: USD per million tokens, by model family (public list prices)."""
from __future__ import annotations

from services.realtime_protocol import Usage

# (text in, audio in, cached in, text out, audio out)
_PRICES = {
    "gpt-realtime-mini": (0.60, 10.0, 0.30, 2.40, 20.0),
    "gpt-realtime": (4.0, 32.0, 0.40, 16.0, 64.0),
}


def _prices(model: str) -> tuple[float, float, float, float, float]:
    for prefix in sorted(_PRICES, key=len, reverse=True):
        if model.startswith(prefix):
            return _PRICES[prefix]
    return _PRICES["gpt-realtime"]


def estimate_cost_usd(model: str, usage: Usage) -> float:
    text_in, audio_in, cached_in, text_out, audio_out = _prices(model)
    total_in = usage.input_text + usage.input_audio
    # Cached tokens are counted inside the input totals; bill them at the cached rate,
    # split between text and audio in proportion.
    cached = min(usage.input_cached, total_in)
    audio_share = usage.input_audio / total_in if total_in else 0.0
    uncached_text = usage.input_text - cached * (1 - audio_share)
    uncached_audio = usage.input_audio - cached * audio_share
    cost = (uncached_text * text_in + uncached_audio * audio_in + cached * cached_in
            + usage.output_text * text_out + usage.output_audio * audio_out)
    return round(cost / 1_000_000, 6)
