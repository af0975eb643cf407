"""The caller-data layer: what the business's records say about the caller, as data only.

How the agent uses these facts (names, gender, not reading them aloud) is said once, in the
system layer; this layer never carries rule text.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timezone, tzinfo

from prompts.templates import cut_at_boundary, fill, load, placeholders

# Lead notes are free text typed by people; more than this is cut (at a sentence end) so that
# one long note cannot crowd the call's instructions.
NOTES_CAP = 300
# Longer "names" are pasted text, not a name to say on the phone.
_NAME_MAX = 60

# Values that CRMs, forms, caller-ID and tests put where a name is missing. Compared casefolded,
# after trimming punctuation and spaces.
PLACEHOLDER_NAMES = frozenset({
    "unknown", "unknown caller", "unknown name", "none", "null", "nil", "nan", "undefined", "n/a", "na",
    "no name", "noname", "name", "test", "testing", "tester", "demo", "customer", "new customer",
    "client", "caller", "guest", "lead", "new lead", "user", "anonymous", "private", "restricted",
    "unavailable", "wireless caller", "mr", "mrs", "ms",
    "לא ידוע", "לא ידועה", "לא ידוע/ה", "לקוח", "לקוחה", "לקוח חדש", "לקוחה חדשה", "לקוח/ה",
    "אין", "אין שם", "ללא", "ללא שם", "שם", "בדיקה", "טסט", "ניסיון", "פלוני", "פלוני אלמוני",
    "מתקשר", "מתקשרת", "אנונימי", "חסוי", "פרטי",
})
_TRIM = " \t\r\n.,;:-_'\"()[]{}<>/\\|*#?!\u05f3\u05f4"
_DIRECTION_MARKS = re.compile("[\u200e\u200f\u202a-\u202e\u2066-\u2069]")

_GENDERS = {
    "male": "male", "m": "male", "man": "male", "זכר": "male", "ז": "male", "גבר": "male",
    "female": "female", "f": "female", "woman": "female", "נקבה": "female", "נ": "female", "אישה": "female",
}


@dataclass(frozen=True)
class CrmFacts:
    """What the business's records say about the caller. Data only; every field may be missing."""

    name: str | None = None
    gender: str | None = None  # "male" | "female" | None
    last_call_at: datetime | None = None
    open_appointment: str | None = None
    notes: str | None = None
    # The business's time zone, in which the last call's day is said; None: UTC.
    zone: tzinfo | None = None


def usable_name(raw: str | None) -> str | None:
    """The name to say to the caller, or None when `raw` is a placeholder or not a name.

    The one place that decides it: the caller-data layer uses nothing else.
    """
    if not raw:
        return None
    name = " ".join(_DIRECTION_MARKS.sub("", raw).split()).strip(_TRIM)
    if len(name) < 2 or len(name) > _NAME_MAX:
        return None
    # Digits mean a phone number, an id or "customer 12", never a name said aloud.
    if any(ch.isdigit() for ch in name) or not any(ch.isalpha() for ch in name):
        return None
    if name.casefold() in PLACEHOLDER_NAMES:
        return None
    return name


def normalize_gender(raw: str | None) -> str | None:
    if not raw:
        return None
    return _GENDERS.get(raw.strip().casefold())


def build_crm_layer(business, crm: CrmFacts | None, *, now: datetime | None = None) -> str:
    """The caller-data layer, or "" when there is nothing to tell the model.

    The name appears only when the business lets the agent use it; when it does not, the layer
    says so even without any facts, because the caller may still say their name during the call.
    """
    use_name = bool(getattr(business, "use_customer_name", True))
    crm = crm or CrmFacts()
    name = usable_name(crm.name) if use_name else None
    values: dict[str, str | None] = {
        "name": name,
        "gender": normalize_gender(crm.gender),
        "use_name": "no" if not use_name else ("yes" if name else None),
        "last_call": _last_call(crm.last_call_at, crm.zone or timezone.utc, now),
        "open_appointment": _one_line(crm.open_appointment),
        "notes": cut_at_boundary(n, NOTES_CAP) if (n := _one_line(crm.notes)) else None,
    }
    lines, has_fact = [], False
    for line in load("crm.md").splitlines():
        keys = placeholders(line)
        if not keys:
            lines.append(line)
        elif all(values.get(key) for key in keys):
            lines.append(fill(line, values)[0])
            has_fact = True
    return "\n".join(lines) if has_fact else ""


def _one_line(text: str | None) -> str | None:
    joined = " ".join((text or "").split())
    return joined or None


def _last_call(at: datetime | None, tz: tzinfo, now: datetime | None) -> str | None:
    if at is None:
        return None
    if at.tzinfo is None:  # stored times are UTC; SQLite drops the zone
        at = at.replace(tzinfo=timezone.utc)
    day = at.astimezone(tz).date()
    days = ((now or datetime.now(timezone.utc)).astimezone(tz).date() - day).days
    ago = {0: "today", 1: "yesterday"}.get(days, f"{days} days ago")
    return f"{day.isoformat()} ({ago})" if days >= 0 else day.isoformat()
