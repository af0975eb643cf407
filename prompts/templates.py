"""Reading the text files in `prompts/text/`, filling `{{placeholders}}`, cutting text to a cap.

The files are the prompts' only source of wording; code here only loads and fills them.
"""
from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path
from typing import Mapping

TEXT_DIR = Path(__file__).resolve().parent / "text"

_PLACEHOLDER = re.compile(r"\{\{\s*(\w+)\s*\}\}")
# A sentence ends at . ! ? or … (closing quotes or brackets may follow) before a space or the end,
# so "3.5" or "www.example.co.il" never count; a line break always ends one.
_SENTENCE_END = re.compile(r"[.!?\u2026][\"'\u201d\u05f4)\]]*(?=\s|$)|\n")
_SPACE = re.compile(r"\s")


@lru_cache(maxsize=None)
def load(name: str) -> str:
    """A text file of `prompts/text/`, read once; trailing whitespace dropped."""
    return (TEXT_DIR / name).read_text(encoding="utf-8").strip()


@lru_cache(maxsize=None)
def sections(name: str) -> tuple[tuple[str, str], ...]:
    """A file's `## heading` sections as (heading, body); text before the first heading has heading ""."""
    found: list[tuple[str, str]] = []
    heading, body = "", []
    for line in load(name).splitlines():
        if line.startswith("## "):
            found.append((heading, "\n".join(body).strip()))
            heading, body = line[3:].strip(), []
        else:
            body.append(line)
    found.append((heading, "\n".join(body).strip()))
    return tuple((h, b) for h, b in found if h or b)


def fill(template: str, values: Mapping[str, str]) -> tuple[str, tuple[str, ...]]:
    """Replace `{{key}}` by its value in one pass (values are never re-scanned).

    Returns the text and the placeholders it has no value for, which are left as written.
    """
    unknown: list[str] = []

    def replace(match: re.Match[str]) -> str:
        key = match.group(1)
        if key in values:
            return values[key]
        unknown.append(key)
        return match.group(0)

    return _PLACEHOLDER.sub(replace, template), tuple(dict.fromkeys(unknown))


def placeholders(line: str) -> tuple[str, ...]:
    return tuple(match.group(1) for match in _PLACEHOLDER.finditer(line))


def cut_at_boundary(text: str, cap: int) -> str:
    """`text` if it fits in `cap` characters, else its longest head within `cap` that ends a sentence.

    Without a sentence end in reach, the cut falls between words; only a single word longer
    than `cap` is cut inside it (there is no better place).
    """
    if len(text) <= cap:
        return text
    ends = [m.end() if m.group(0) != "\n" else m.start() for m in _SENTENCE_END.finditer(text, 0, cap + 1)]
    for end in reversed(ends):
        if end <= cap and text[:end].strip():
            return text[:end].rstrip()
    spaces = [m.start() for m in _SPACE.finditer(text, 0, cap + 1)]
    for start in reversed(spaces):
        if text[:start].strip():
            return text[:start].rstrip()
    return text[:cap]
