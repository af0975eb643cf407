"""The prompt layers and their assembly: each rule once, each prompt built once per call."""
import dataclasses
import json
import logging
import re
from datetime import datetime, timedelta, timezone
from types import SimpleNamespace
from zoneinfo import ZoneInfo

import pytest

from prompts import (
    BUSINESS_PROMPT_CAP,
    CallPrompts,
    CrmFacts,
    assemble_call_prompts,
    build_business_layer,
    build_crm_layer,
    build_extraction_prompt,
    build_greeting_layer,
    build_system_layer,
    build_transcription_prompt,
    crm_context_message,
    greeting_text,
    prompt_preview,
    usable_name,
)
from prompts.templates import TEXT_DIR, cut_at_boundary
from prompts.today import build_today_layer
from services.scheduling import today_facts
from services.store.models import Business

HEBREW_PROMPT = ("{{business_name}} היא מספרה בתל אביב. שעות הפעילות: ראשון עד חמישי 09:00-19:00. "
                 "תספורת גברים 80 ש\"ח, תספורת נשים 150 ש\"ח.")
ENGLISH_PROMPT = "{{business_name}} is a dental clinic in Haifa. We do check-ups and cleaning. Prices start at 250 NIS."


def business(**fields):
    values = dict(name="מספרת הבדיקה", business_prompt=HEBREW_PROMPT, greeting="מספרת הבדיקה שלום, איך אפשר לעזור?",
                  outbound_greeting="שלום, מדברים ממספרת הבדיקה.", use_customer_name=True)
    values.update(fields)
    return SimpleNamespace(**values)


BUSINESSES = {
    "hebrew": business(),
    "english": business(name="Smile Clinic", business_prompt=ENGLISH_PROMPT, greeting="Smile Clinic, hello!"),
    "empty": business(business_prompt="", greeting="", outbound_greeting=""),
    "names off": business(use_customer_name=False),
    "long": business(business_prompt="משפט ארוך על העסק. " * 400),
}
FULL_FACTS = CrmFacts(name="דנה", gender="female", last_call_at=datetime(2025, 3, 2, 10, tzinfo=timezone.utc),
                      open_appointment="יום שלישי 10:00, תספורת", notes="מעדיפה שיחות קצרות.")


@pytest.fixture
def crm_clock(monkeypatch):
    """Pins the clock the caller-data layer reads when it is given no `now` ("Last call: ... (N days
    ago)"), for tests that build that layer twice and compare the two: a midnight between the builds
    (UTC's, FULL_FACTS having no zone) would change N in one of them."""
    pinned = datetime(2025, 3, 5, 12, tzinfo=timezone.utc)

    class PinnedDatetime(datetime):
        @classmethod
        def now(cls, tz=None):
            return pinned if tz is None else pinned.astimezone(tz)

    monkeypatch.setattr("prompts.crm.datetime", PinnedDatetime)
    return pinned


def system_sentences() -> list[str]:
    """Every rule sentence of the system text, both directions included."""
    text = (TEXT_DIR / "system.md").read_text(encoding="utf-8")
    lines = [line for line in text.splitlines() if line.strip() and not line.startswith("#")]
    return [s.strip() for line in lines for s in re.split(r"(?<=[.;:])\s+", line) if len(s.strip()) > 15]


# System layer

@pytest.mark.parametrize("direction, other", [("inbound", "outbound"), ("outbound", "inbound")])
def test_system_layer_keeps_only_this_directions_opening(direction, other):
    text = build_system_layer(direction).text
    assert f"## Opening ({direction})" in text
    assert f"({other})" not in text
    assert "## Opening\n" in text


def test_system_layer_says_every_rule_area():
    text = build_system_layer("inbound").text
    for phrase in ("Israeli Hebrew", "clearly does not understand Hebrew", "switch back to Hebrew",
                   "only about this call", "by name", "gender", "never read them aloud", "this business's services",
                   "starts speaking, stop", "Never invent", "ask them to repeat", "one question at a time",
                   "Your first words on the call are the greeting"):
        assert phrase in text


@pytest.mark.parametrize("key", list(BUSINESSES))
def test_system_layer_has_no_business_content(key):
    b = BUSINESSES[key]
    system = prompt_preview(b, "inbound", FULL_FACTS)["layers"]["system"]["text"]
    assert system == build_system_layer("inbound").text
    for data in (b.name, "מספרה", "Haifa", "דנה", "תספורת"):
        assert data not in system


@pytest.mark.parametrize("key", list(BUSINESSES))
@pytest.mark.parametrize("direction", ["inbound", "outbound"])
def test_each_rule_sentence_lives_in_exactly_one_layer(key, direction):
    preview = prompt_preview(BUSINESSES[key], direction, FULL_FACTS)
    layers = {name: layer["text"] for name, layer in preview["layers"].items()}
    instructions = preview["instructions"]["text"]
    for sentence in system_sentences():
        if sentence not in layers["system"]:
            continue  # the other direction's opening
        assert instructions.count(sentence) == 1, sentence
        for name in ("business", "crm", "greeting", "transcription"):
            assert sentence not in layers[name], (name, sentence)


def test_no_rule_wording_outside_the_system_layer():
    preview = prompt_preview(BUSINESSES["names off"], "outbound", FULL_FACTS)
    for name in ("business", "crm", "greeting", "transcription"):
        text = preview["layers"][name]["text"].lower()
        for rule_word in ("never", "only when", "read them aloud", "gender-neutral", "sparingly", "politely"):
            assert rule_word not in text, (name, rule_word)


# Business layer

def test_business_prompt_fills_the_name_under_the_business_heading():
    layer = build_business_layer(BUSINESSES["hebrew"])
    assert layer.text.startswith("# מספרת הבדיקה\n\n")
    assert "מספרת הבדיקה היא מספרה בתל אביב." in layer.text
    assert "{{" not in layer.text and layer.warnings == ()


def test_english_business_prompt_is_kept_as_written():
    layer = build_business_layer(BUSINESSES["english"])
    assert "Smile Clinic is a dental clinic in Haifa." in layer.text
    assert layer.warnings == ()


def test_business_without_a_prompt_gets_the_hebrew_default_with_its_name():
    layer = build_business_layer(BUSINESSES["empty"])
    body = layer.text.split("\n\n", 1)[1]
    assert "מספרת הבדיקה" in body and "{{" not in body
    assert re.search("[\u0590-\u05ff]", body)


def test_none_prompt_and_whitespace_prompt_count_as_missing():
    assert build_business_layer(business(business_prompt=None)).text == build_business_layer(
        business(business_prompt="  \n ")).text


def test_unknown_placeholder_is_reported():
    layer = build_business_layer(business(business_prompt="{{business_name}} פתוח עד {{closing_time}}."))
    assert "{{closing_time}}" in layer.text
    assert any("closing_time" in w for w in layer.warnings)


def test_over_long_prompt_is_cut_at_a_sentence_and_the_cut_is_logged_and_returned(caplog):
    caplog.set_level(logging.WARNING, logger="prompts")
    prompts = assemble_call_prompts(BUSINESSES["long"], "inbound", None)
    body = build_business_layer(BUSINESSES["long"]).text.split("\n\n", 1)[1]
    assert len(body) <= BUSINESS_PROMPT_CAP
    assert body.endswith("על העסק.")
    assert any("business prompt cut" in w and f"cap {BUSINESS_PROMPT_CAP}" in w for w in prompts.warnings)
    assert any(r.name == "prompts" and "cut" in r.getMessage() for r in caplog.records)


def test_an_english_prompt_is_cut_at_a_sentence_too():
    source = " ".join([ENGLISH_PROMPT] * 60).replace("{{business_name}}", "Smile Clinic")
    prompts = assemble_call_prompts(business(name="Smile Clinic", business_prompt=source), "inbound", None)
    body = prompts.instructions.split("# Smile Clinic\n\n", 1)[1].split("\n\n# Caller data", 1)[0]
    assert len(body) <= BUSINESS_PROMPT_CAP and source.startswith(body + " ") and body.endswith(".")
    assert prompts.warnings


def test_prompt_within_the_cap_is_untouched():
    text = "א" * BUSINESS_PROMPT_CAP
    layer = build_business_layer(business(business_prompt=text))
    assert layer.text.endswith(text) and layer.warnings == ()


# The cut

@pytest.mark.parametrize("text, cap, expected", [
    ("שלום לכם. מה שלומכם היום? טוב מאוד", 30, "שלום לכם. מה שלומכם היום?"),
    ("First one. Second one! Third one", 25, "First one. Second one!"),
    ("שורה ראשונה בלי נקודה\nשורה שנייה ארוכה", 25, "שורה ראשונה בלי נקודה"),
    ("המחיר 3.5 שקלים לדקה ועוד הרבה מילים", 12, "המחיר 3.5"),
    ("מילים בלי שום סימן פיסוק בכלל", 14, "מילים בלי שום"),
    ("He said \"stop.\" Then he left", 18, "He said \"stop.\""),
    ("אחת.שתיים שלוש ארבע", 12, "אחת.שתיים"),
    ("קצר.", 10, "קצר."),
])
def test_cut_examples(text, cap, expected):
    assert cut_at_boundary(text, cap) == expected


@pytest.mark.parametrize("text", [
    HEBREW_PROMPT.replace("{{business_name}}", "מספרת הבדיקה") * 3,
    ENGLISH_PROMPT.replace("{{business_name}}", "Smile Clinic") * 3,
    "מילה " * 50,
    "שורה אחת\nשורה שתיים, ארוכה יותר\n" * 5,
])
def test_cut_never_falls_inside_a_word(text):
    for cap in range(5, len(text)):
        cut = cut_at_boundary(text, cap)
        assert len(cut) <= cap and text.startswith(cut)
        assert text[len(cut)].isspace(), (cap, cut)


def test_one_word_longer_than_the_cap_is_the_only_hard_cut():
    assert cut_at_boundary("א" * 50, 10) == "א" * 10


# Greeting layer

def test_inbound_and_outbound_greetings_come_from_their_fields():
    b = BUSINESSES["hebrew"]
    assert greeting_text(b, "inbound") == b.greeting
    assert greeting_text(b, "outbound") == b.outbound_greeting
    instruction = build_greeting_layer(b, "outbound").text
    assert instruction.endswith("\n" + b.outbound_greeting)
    assert "exactly" in instruction and "word for word" in instruction


def test_business_without_greetings_gets_hebrew_defaults_with_its_name():
    b = BUSINESSES["empty"]
    for direction in ("inbound", "outbound"):
        greeting = greeting_text(b, direction)
        assert "מספרת הבדיקה" in greeting and "{{" not in greeting
        assert re.search("[\u0590-\u05ff]{3}", greeting.replace("מספרת הבדיקה", ""))
    assert greeting_text(b, "inbound") != greeting_text(b, "outbound")


def test_greeting_placeholder_is_filled():
    b = business(greeting="שלום, הגעתם ל{{business_name}}.")
    assert greeting_text(b, "inbound") == "שלום, הגעתם למספרת הבדיקה."


def test_long_greeting_is_reported_not_cut():
    long_greeting = "שלום " * 60
    layer = build_greeting_layer(business(greeting=long_greeting), "inbound")
    assert long_greeting.strip() in layer.text
    assert layer.warnings


def test_unknown_direction_is_refused():
    with pytest.raises(ValueError):
        assemble_call_prompts(BUSINESSES["hebrew"], "sideways", None)


# Caller-data layer

def test_caller_data_layer_is_data_only():
    text = build_crm_layer(BUSINESSES["hebrew"], FULL_FACTS, now=datetime(2025, 3, 5, tzinfo=timezone.utc))
    assert text.splitlines() == [
        "# Caller data",
        "- Name: דנה",
        "- Gender: female",
        "- Address the caller by name: yes",
        "- Last call with this business: 2025-03-02 (3 days ago)",
        "- Open appointment: יום שלישי 10:00, תספורת",
        "- Notes from the business's records: מעדיפה שיחות קצרות.",
    ]


def test_name_is_left_out_when_the_business_turns_names_off():
    text = build_crm_layer(BUSINESSES["names off"], FULL_FACTS)
    assert "דנה" not in text
    assert "- Address the caller by name: no" in text
    assert "- Gender: female" in text


def test_names_off_is_said_even_without_caller_facts():
    prompts = assemble_call_prompts(BUSINESSES["names off"], "inbound", None)
    assert prompts.instructions.endswith("# Caller data\n- Address the caller by name: no")


def test_no_caller_layer_when_nothing_is_known():
    prompts = assemble_call_prompts(BUSINESSES["hebrew"], "inbound", None)
    assert "# Caller data" not in prompts.instructions
    assert prompts.layer_sizes["crm"] == 0
    assert build_crm_layer(BUSINESSES["hebrew"], CrmFacts()) == ""


@pytest.mark.parametrize("raw, expected", [("זכר", "male"), ("F", "female"), ("נקבה", "female"), ("other", None),
                                           (None, None)])
def test_gender_is_normalised(raw, expected):
    text = build_crm_layer(BUSINESSES["hebrew"], CrmFacts(name="נועם", gender=raw))
    if expected:
        assert f"- Gender: {expected}" in text
    else:
        assert "Gender" not in text


PLACEHOLDERS = ["unknown", "Unknown", "NONE", "null", "test", "customer", "Customer", "לא ידוע", "לקוח", "אין",
                "", "   ", "0501234567", "+972-50-123-4567", "לקוח 12", "\u200fלא ידוע\u200f", "N/A", "-", "?",
                "ללא שם", "Unknown Caller"]


@pytest.mark.parametrize("name", PLACEHOLDERS)
def test_placeholder_names_never_reach_the_prompts(name):
    facts = CrmFacts(name=name, gender="male")
    assert usable_name(name) is None
    prompts = assemble_call_prompts(BUSINESSES["hebrew"], "inbound", facts)
    caller_layer = prompts.instructions.split("# Caller data", 1)[1]
    assert "Name:" not in caller_layer and "by name" not in caller_layer
    if any(ch.isalpha() for ch in name):
        assert name.strip(" \u200f") not in caller_layer
    assert "Name:" not in crm_context_message(BUSINESSES["hebrew"], facts)


@pytest.mark.parametrize("name, expected", [("דני", "דני"), (" Dana  Levi ", "Dana Levi"), ("שירה-לי", "שירה-לי"),
                                            ("O'Brien", "O'Brien"), ("\u200fיוסי\u200f", "יוסי")])
def test_real_names_are_kept(name, expected):
    assert usable_name(name) == expected
    assert f"- Name: {expected}\n" in build_crm_layer(BUSINESSES["hebrew"], CrmFacts(name=name))


def test_long_notes_are_cut_to_whole_sentences():
    notes = "הלקוח ביקש תור. " * 100
    text = build_crm_layer(BUSINESSES["hebrew"], CrmFacts(notes=notes))
    line = text.splitlines()[-1]
    assert line.endswith("ביקש תור.") and len(line) < 400


def test_late_caller_message_is_the_same_layer_as_in_instructions(crm_clock):
    b = BUSINESSES["hebrew"]
    in_instructions = assemble_call_prompts(b, "inbound", FULL_FACTS).instructions
    assert in_instructions.endswith(crm_context_message(b, FULL_FACTS))
    assert "- Last call with this business: 2025-03-02 (3 days ago)" in in_instructions


# Transcription and extraction

def test_transcription_prompt_is_hebrew_and_names_the_business():
    text = build_transcription_prompt(BUSINESSES["hebrew"]).text
    assert "מספרת הבדיקה" in text and "{{" not in text
    assert re.search("[\u0590-\u05ff]", text)


def test_extraction_prompt_asks_for_every_field():
    text = build_extraction_prompt(BUSINESSES["english"])
    assert "Smile Clinic" in text and "{{" not in text
    for key in ("caller_name", "phone", "service_requested", "city", "preferred_datetime", "appointment_booked",
                "follow_up_needed", "urgency", "sentiment", "language", "outcome"):
        assert f'"{key}"' in text


# Assembly

def test_assembled_prompts_are_one_frozen_value():
    prompts = assemble_call_prompts(BUSINESSES["hebrew"], "inbound", FULL_FACTS)
    assert isinstance(prompts, CallPrompts)
    with pytest.raises(dataclasses.FrozenInstanceError):
        prompts.instructions = "x"
    with pytest.raises(TypeError):
        prompts.layer_sizes["system"] = 0


def test_instructions_are_system_then_business_then_caller_data(crm_clock):
    b = BUSINESSES["hebrew"]
    today = today_facts({"wed": [["09:00", "13:00"]]}, datetime(2026, 4, 1, 9, 5, tzinfo=ZoneInfo("Asia/Jerusalem")))
    prompts = assemble_call_prompts(b, "inbound", FULL_FACTS, today)
    system = build_system_layer("inbound").text
    business_layer = build_business_layer(b).text
    today_layer = build_today_layer(today).text
    caller = build_crm_layer(b, FULL_FACTS)
    assert "(3 days ago)" in caller
    assert prompts.instructions == "\n\n".join([system, business_layer, today_layer, caller])
    assert dict(prompts.layer_sizes) == {
        "system": len(system), "business": len(business_layer), "today": len(today_layer), "crm": len(caller),
        "greeting": len(prompts.greeting_instruction), "transcription": len(prompts.transcription_prompt),
    }
    assert b.greeting not in prompts.instructions
    assert prompts.greeting_instruction == build_greeting_layer(b, "inbound").text
    assert prompts.warnings == ()


def test_the_orm_business_fits():
    b = Business(name="מספרת הדגמה", business_prompt="{{business_name}} בתל אביב.", greeting="", outbound_greeting="",
                 use_customer_name=True)
    prompts = assemble_call_prompts(b, "outbound", CrmFacts(name="אבי"))
    assert "מספרת הדגמה בתל אביב." in prompts.instructions
    assert "- Name: אבי" in prompts.instructions


def test_prompt_preview_is_json_with_every_layer():
    preview = prompt_preview(BUSINESSES["long"], "outbound", FULL_FACTS)
    json.dumps(preview, ensure_ascii=False)
    assert set(preview["layers"]) == {"system", "business", "today", "crm", "greeting", "transcription"}
    for layer in preview["layers"].values():
        assert layer["chars"] == len(layer["text"])
    assert preview["greeting"] == BUSINESSES["long"].outbound_greeting
    assert preview["warnings"] and preview["direction"] == "outbound"
    assert preview["instructions"]["chars"] == len(preview["instructions"]["text"])


def test_last_call_is_shown_in_the_business_timezone():
    late_evening_utc = datetime(2025, 3, 2, 23, 30, tzinfo=timezone.utc)  # already 3 March in Israel
    facts = CrmFacts(last_call_at=late_evening_utc, zone=ZoneInfo("Asia/Jerusalem"))
    text = build_crm_layer(business(), facts, now=late_evening_utc + timedelta(hours=1))
    assert "- Last call with this business: 2025-03-03 (today)" in text
