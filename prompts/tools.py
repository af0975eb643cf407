"""Texts for call control: the tools' descriptions (`tools.md`) and the notices the server gives
the model during a call (`call_events.md`). Wording lives in those files; rules stay in `system.md`."""
from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Mapping

from prompts.templates import fill, sections


@dataclass(frozen=True)
class ToolText:
    description: str
    parameters: Mapping[str, str]  # parameter name -> its description


def tool_text(name: str) -> ToolText:
    """A tool's section of `tools.md`: prose lines are the description, `- name: text` lines its parameters."""
    body = dict(sections("tools.md"))[name]
    description, parameters = [], {}
    for line in body.splitlines():
        key, sep, text = line[2:].partition(": ") if line.startswith("- ") else ("", "", "")
        if sep:
            parameters[key.strip()] = text.strip()
        elif line.strip():
            description.append(line.strip())
    return ToolText(" ".join(description), MappingProxyType(parameters))


def call_event(name: str, **values: str) -> str:
    """A section of `call_events.md`, placeholders filled."""
    return fill(dict(sections("call_events.md"))[name], values)[0]
