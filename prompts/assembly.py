"""Everything a call's session needs from the prompts, built once per call before `session.update`."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Mapping

from prompts.crm import CrmFacts, build_crm_layer
from prompts.layers import (
    BUSINESS_PROMPT_CAP,
    Layer,
    build_business_layer,
    build_greeting_layer,
    build_system_layer,
    build_transcription_prompt,
    check_direction,
    greeting_text,
)
from prompts.today import TodayFacts, build_today_layer

log = logging.getLogger("prompts")


@dataclass(frozen=True)
class CallPrompts:
    """One call's prompts. Never changed after it is built: late CRM facts go in a conversation item."""

    instructions: str  # session.update: system + business + today (+ caller data when known before it)
    greeting_instruction: str  # the first response.create: say the greeting
    transcription_prompt: str
    layer_sizes: Mapping[str, int]  # characters per layer: system, business, today, crm, greeting, transcription
    warnings: tuple[str, ...]


def assemble_call_prompts(business, direction: str, crm: CrmFacts | None, today: TodayFacts | None = None) -> CallPrompts:
    return _assemble(business, direction, crm, today)[0]


def crm_context_message(business, crm: CrmFacts) -> str:
    """The caller-data layer for facts that came after `session.update`; sent once as a system item.

    "" when there is nothing to say (send nothing then).
    """
    return build_crm_layer(business, crm)


def prompt_preview(business, direction: str = "inbound", crm: CrmFacts | None = None,
                   today: TodayFacts | None = None) -> dict[str, Any]:
    """What a call would get, layer by layer, for GET /api/businesses/<id>/prompt-preview."""
    prompts, layers = _assemble(business, direction, crm, today)
    return {
        "direction": direction,
        "business_prompt_cap": BUSINESS_PROMPT_CAP,
        "greeting": greeting_text(business, direction),
        "layers": {name: {"text": layer.text, "chars": len(layer.text)} for name, layer in layers.items()},
        "instructions": {"text": prompts.instructions, "chars": len(prompts.instructions)},
        "warnings": list(prompts.warnings),
    }


def _assemble(business, direction: str, crm: CrmFacts | None,
              today: TodayFacts | None) -> tuple[CallPrompts, dict[str, Layer]]:
    check_direction(direction)
    layers = {
        "system": build_system_layer(direction),
        "business": build_business_layer(business),
        "today": build_today_layer(today),
        "crm": Layer(build_crm_layer(business, crm)),
        "greeting": build_greeting_layer(business, direction),
        "transcription": build_transcription_prompt(business),
    }
    instructions = "\n\n".join(layers[name].text for name in ("system", "business", "today", "crm")
                                 if layers[name].text)
    sizes = MappingProxyType({name: len(layer.text) for name, layer in layers.items()})
    log.debug("call prompts built", extra={"direction": direction, "instructions_chars": len(instructions),
                                           **{f"{name}_chars": size for name, size in sizes.items()}})
    prompts = CallPrompts(
        instructions=instructions,
        greeting_instruction=layers["greeting"].text,
        transcription_prompt=layers["transcription"].text,
        layer_sizes=sizes,
        warnings=tuple(w for layer in layers.values() for w in layer.warnings),
    )
    return prompts, layers
