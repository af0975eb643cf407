"""The console's "voice and listening" section: it saves a business's Realtime settings as the API
would, refuses what the API refuses in the API's words, and an empty input means the default."""
from __future__ import annotations

import pytest
import requests

from services.store.models import Business
from tests.console_client import texts_of
from tests.console_world import api, apart_from_today, business_id, client, console_server  # noqa: F401 (fixtures)

BASE_FORM = {"name": "מספרת הים", "voice": "coral", "timezone": "Asia/Jerusalem"}
EMPTY_SECTION = {name: "" for name in (
    "rt_model", "rt_turn_detection", "rt_threshold", "rt_prefix_padding_ms", "rt_silence_duration_ms",
    "rt_eagerness", "rt_noise_reduction", "rt_speed", "rt_max_output_tokens", "rt_transcription_model",
    "rt_transcription_language")}


def save(client, business_id: int, section: dict) -> requests.Response:
    path = f"/console/businesses/{business_id}"
    return client.post(path, {**BASE_FORM, **EMPTY_SECTION, **section}, csrf_from=path)


def realtime_of(live, business_id: int) -> dict:
    return api(live, "GET", f"/api/businesses/{business_id}").json()["realtime"]


def stored(live, business_id: int):
    with live.db.session() as session:
        return session.get(Business, business_id).realtime


def selected(page: str, name: str) -> list[str]:
    select = page.split(f'<select id="{name}"', 1)[1].split("</select>", 1)[0]
    return texts_of(select, r'<option value="([^"]*)" selected>')


def test_the_section_saves_the_settings_and_shows_them_back(console_server, business_id, client):
    answer = save(client, business_id, {
        "rt_model": "gpt-realtime-mini", "rt_turn_detection": "server_vad", "rt_threshold": "0.6",
        "rt_prefix_padding_ms": "250", "rt_silence_duration_ms": " 700 ", "rt_noise_reduction": "far_field",
        "rt_speed": "1.1", "rt_max_output_tokens": "600", "rt_transcription_language": "en"})
    assert answer.status_code == 302, answer.text
    assert realtime_of(console_server, business_id) == {
        "model": "gpt-realtime-mini",
        "turn_detection": {"type": "server_vad", "threshold": 0.6, "prefix_padding_ms": 250, "silence_duration_ms": 700},
        "noise_reduction": "far_field", "speed": 1.1, "max_output_tokens": 600,
        "transcription": {"model": "gpt-4o-transcribe", "language": "en"}}
    page = client.get(f"/console/businesses/{business_id}").text
    assert "קול והקשבה" in page
    assert selected(page, "rt_model") == ["gpt-realtime-mini"] and selected(page, "rt_noise_reduction") == ["far_field"]
    assert selected(page, "rt_transcription_model") == [], "not chosen: the default option, unselected"
    assert texts_of(page, r'id="rt_silence_duration_ms" name="rt_silence_duration_ms" value="([^"]*)"') == ["700"]
    assert texts_of(page, r'id="rt_transcription_model" name="rt_transcription_model" dir="ltr">\s*<option value="">([^<]*)<') \
        == ["ברירת המחדל (gpt-4o-transcribe)"]

    # Semantic VAD, and emptied inputs going back to the defaults.
    answer = save(client, business_id, {"rt_turn_detection": "semantic_vad", "rt_eagerness": "high"})
    assert answer.status_code == 302, answer.text
    assert stored(console_server, business_id) == {"turn_detection": {"type": "semantic_vad", "eagerness": "high"}}
    shown = realtime_of(console_server, business_id)
    assert shown["model"] == "gpt-realtime" and shown["speed"] == 1.0 and shown["max_output_tokens"] == "inf"
    assert save(client, business_id, {}).status_code == 302
    assert stored(console_server, business_id) is None


@pytest.mark.parametrize("section, body", [
    ({"rt_speed": "fast"}, {"speed": "fast"}),
    ({"rt_speed": "2"}, {"speed": 2}),
    ({"rt_threshold": "1.5", "rt_silence_duration_ms": "20"},
     {"turn_detection": {"type": "server_vad", "threshold": 1.5, "silence_duration_ms": 20}}),
    ({"rt_turn_detection": "semantic_vad", "rt_threshold": "0.5"},
     {"turn_detection": {"type": "semantic_vad", "threshold": 0.5}}),
    ({"rt_max_output_tokens": "lots"}, {"max_output_tokens": "lots"}),
    ({"rt_model": "gpt-5"}, {"model": "gpt-5"}),
    ({"rt_transcription_language": "Hebrew"}, {"transcription": {"language": "Hebrew"}}),
])
def test_bad_settings_are_refused_in_the_apis_words_and_nothing_is_saved(console_server, business_id, client,
                                                                          section, body):
    answer = save(client, business_id, section)
    assert answer.status_code == 422
    refused = api(console_server, "PATCH", f"/api/businesses/{business_id}", json={"realtime": body})
    assert refused.status_code == 422
    shown = texts_of(answer.text, r'class="field-error" id="error-realtime" data-field="realtime">([^<]*)<')
    assert shown == [refused.json()["fields"]["realtime"]]
    assert stored(console_server, business_id) is None
    assert api(console_server, "GET", f"/api/businesses/{business_id}").json()["voice"] == "alloy", "nothing saved"
    # The page keeps what was typed, to fix it.
    for name, value in section.items():
        assert f'value="{value}"' in answer.text


def test_the_prompt_preview_is_not_held_up_by_the_voice_section(console_server, business_id, client):
    """The page posts the whole form to the preview: the Realtime inputs, even half-typed, do not
    change the prompt nor stop the preview."""
    path = f"/console/businesses/{business_id}"
    form = {**BASE_FORM, **EMPTY_SECTION, "business_prompt": "מספרה בחיפה.", "rt_speed": "fa"}
    answer = client.post(f"{path}/preview", form, csrf_from=path)
    assert answer.status_code == 200, answer.text
    with_section = answer.json()
    without = client.post(f"{path}/preview", {k: v for k, v in form.items() if not k.startswith("rt_")},
                          csrf_from=path).json()
    assert "מספרה בחיפה." in with_section["inbound"]["layers"]["business"]["text"]
    assert apart_from_today(with_section["inbound"]) == apart_from_today(without["inbound"])
