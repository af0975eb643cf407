"""One builder per prompt layer, each filling its one text file of `prompts/text/`.

`business` is any object with `name, business_prompt, greeting, outbound_greeting,
use_customer_name` and optionally `record_calls, recording_notice` (the ORM `Business` fits). `direction` is "inbound" or "outbound".
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass

from prompts.templates import cut_at_boundary, fill, load, sections

log = logging.getLogger("prompts")

DIRECTIONS = ("inbound", "outbound")
# The business prompt rides in every response's context: past this many characters it slows the
# first response and drowns the system rules. The cut keeps whole sentences and is reported.
BUSINESS_PROMPT_CAP = 3000
# A greeting longer than this keeps the caller waiting before they can speak; it is reported, not cut.
GREETING_WARN_CHARS = 200

_DIRECTION_TAG = re.compile(r"\((inbound|outbound)\)$")


@dataclass(frozen=True)
class Layer:
    text: str
    warnings: tuple[str, ...] = ()


def business_name(business) -> str:
    return " ".join((getattr(business, "name", "") or "").split())


def check_direction(direction: str) -> str:
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {DIRECTIONS}, not {direction!r}")
    return direction


def build_system_layer(direction: str) -> Layer:
    """The universal rules, with the opening section for this call's direction only."""
    check_direction(direction)
    parts = []
    for heading, body in sections("system.md"):
        tag = _DIRECTION_TAG.search(heading)
        if tag and tag.group(1) != direction:
            continue
        parts.append(f"## {heading}\n{body}" if heading else body)
    return Layer("\n\n".join(parts))


def build_business_layer(business) -> Layer:
    """The business's own prompt (or the default one) under the business's name, cut to the cap."""
    cap = BUSINESS_PROMPT_CAP
    name = business_name(business)
    source = (getattr(business, "business_prompt", "") or "").strip() or load("business_default.he.md")
    text, unknown = fill(source, {"business_name": name})
    warnings = [f"unknown placeholder {{{{{key}}}}} left as written in the business prompt" for key in unknown]
    if unknown:
        log.warning("unknown placeholders in business prompt", extra={"business": name, "keys": ",".join(unknown)})
    if len(text) > cap:
        cut = cut_at_boundary(text, cap)
        warnings.append(f"business prompt cut from {len(text)} to {len(cut)} characters (cap {cap})")
        log.warning("business prompt cut", extra={"business": name, "chars": len(text), "kept": len(cut),
                                                  "cap": cap})
        text = cut
    return Layer(f"# {name}\n\n{text}" if name else text, tuple(warnings))


def greeting_text(business, direction: str) -> str:
    """What the agent says first: the business's greeting for this direction, or the default one."""
    field = "greeting" if check_direction(direction) == "inbound" else "outbound_greeting"
    own = (getattr(business, field, "") or "").strip()
    texts = dict(sections("greeting.md"))
    source = own or texts[f"Default ({direction})"]
    greeting = " ".join(fill(source, {"business_name": business_name(business)})[0].split())
    if getattr(business, "record_calls", False) and getattr(business, "recording_notice", False):
        greeting = f"{greeting} {texts['Recording notice']}"
    return greeting


def build_greeting_layer(business, direction: str) -> Layer:
    """The instruction for the call's first `response.create`: say exactly the greeting.

    A response's instructions replace the session's for that response, so this one stands alone.
    """
    greeting = greeting_text(business, direction)
    warnings = []
    if len(greeting) > GREETING_WARN_CHARS:
        warnings.append(f"{direction} greeting is {len(greeting)} characters; keep it under {GREETING_WARN_CHARS}")
    if "{{" in greeting:
        warnings.append(f"{direction} greeting has a placeholder other than {{{{business_name}}}}; it would be spoken")
    return Layer(fill(dict(sections("greeting.md"))["Instruction"], {"greeting": greeting})[0], tuple(warnings))


def build_transcription_prompt(business) -> Layer:
    """The Hebrew prompt that primes input transcription with the business's name and call vocabulary."""
    return Layer(fill(load("transcription.he.txt"), {"business_name": business_name(business)})[0])


def build_extraction_prompt(business) -> str:
    """System prompt for post-call extraction; the transcript goes in the user message."""
    return fill(load("extraction.md"), {"business_name": business_name(business)})[0]
