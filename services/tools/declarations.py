"""Which tools a call gets, from its business's settings, with their JSON Schemas.

The descriptions are prose and live in `prompts/text/tools.md`; the schemas are here.
"""
from __future__ import annotations

from typing import Any, Mapping

from prompts.tools import tool_text
from services.realtime_protocol import FunctionTool

_STRING = {"type": "string"}
# Each tool's parameters (all strings) and which of them are required.
_PARAMETERS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "end_call": (("reason",), ("reason",)),
    "transfer_call": (("reason",), ("reason",)),
    "check_availability": (("date", "time"), ("date",)),
    "schedule_appointment": (("name", "phone", "date", "time", "note"), ("name", "date", "time")),
}


def tool_names(business) -> tuple[str, ...]:
    """Ending is always possible; a transfer needs a number; appointments need working hours."""
    names = ["end_call"]
    if getattr(business, "transfer_number", None):
        names.append("transfer_call")
    if any((getattr(business, "working_hours", None) or {}).values()):
        names += ["check_availability", "schedule_appointment"]
    return tuple(names)


def declaration(name: str) -> FunctionTool:
    text = tool_text(name)
    names, required = _PARAMETERS[name]
    properties: dict[str, Mapping[str, Any]] = {p: {**_STRING, "description": text.parameters[p]} for p in names}
    return FunctionTool(name=name, description=text.description,
                        parameters={"type": "object", "properties": properties, "required": list(required),
                                    "additionalProperties": False})


def declarations(business) -> list[FunctionTool]:
    return [declaration(name) for name in tool_names(business)]
