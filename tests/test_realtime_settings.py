"""A business's Realtime settings: set through the API, they reach the Realtime API's session.update
and the URL's ?model=; bad ones are refused; none set, a call is configured as it always was;
the cost follows the model's own prices."""
import itertools

import pytest
import requests

from services import pricing
from services import realtime_settings as rs
from services.settings import realtime_url
from services.realtime_protocol import Usage, session_update, validate_client_event
from services.store.models import AuditEntry, Business
from tests.fakes.waiting import wait_for
from tests.fakes.realtime_server import RealtimeScript, Reply

GREETING = Reply("שלום, הגעתם למספרת הבדיקה", 800)
CHOSEN = {"model": "gpt-realtime-mini", "turn_detection": {"type": "semantic_vad", "eagerness": "low"},
          "noise_reduction": "near_field", "speed": 1.2, "max_output_tokens": 800,
          "transcription": {"model": "gpt-4o-mini-transcribe", "language": "ar"}}
# Every call before these settings existed: what a business that chose nothing still gets.
TODAYS_AUDIO = {
    "input": {
        "format": {"type": "audio/pcmu"},
        "transcription": {"model": "gpt-4o-transcribe", "language": "he"},
        "turn_detection": {"type": "server_vad", "threshold": 0.5, "silence_duration_ms": 400,
                           "prefix_padding_ms": 300, "create_response": False, "interrupt_response": False},
    },
    "output": {"format": {"type": "audio/pcmu"}, "voice": "alloy"},
}


def business_url(live, business_id: int) -> str:
    return f"{live.base_url}/api/businesses/{business_id}"


def patch(live, business_id: int, body: dict) -> requests.Response:
    return requests.patch(business_url(live, business_id), json=body, timeout=5)


def shown(live, business_id: int) -> dict:
    response = requests.get(business_url(live, business_id), timeout=5)
    assert response.status_code == 200, response.text
    return response.json()["realtime"]


def stored_choices(live, business_id: int):
    with live.db.session() as session:
        return session.get(Business, business_id).realtime


def first_session(h) -> tuple[object, dict]:
    """The call's first Realtime connection and the session its session.update set."""
    caller = h.call()
    # The first to carry anything: one opened at Twilio's upgrade for the default model is closed
    # again, unused, when the business has its own. A loaded machine can take seconds to set a call up.
    conn = wait_for(lambda: h.fake.carried() and h.fake.carried()[0], 15, message="a connection carrying the call")
    update = conn.wait_for_client_event("session.update", timeout=15)
    caller.wait_heard(GREETING.audio_ms, timeout=15)
    return conn, update["session"]


def without_prompt(audio: dict) -> dict:
    transcription = {k: v for k, v in audio["input"]["transcription"].items() if k != "prompt"}
    return {**audio, "input": {**audio["input"], "transcription": transcription}}


# --- through a whole call ---------------------------------------------------------------

def test_settings_set_through_the_api_reach_the_session_update_and_the_url(make_harness):
    h = make_harness(RealtimeScript(responses=[GREETING]))
    answer = patch(h.live, h.business_id, {"realtime": CHOSEN})
    assert answer.status_code == 200, answer.text
    assert answer.json()["realtime"] == CHOSEN, "every setting chosen, so the effective ones are the choices"

    conn, session = first_session(h)
    assert conn.model == "gpt-realtime-mini"
    audio = session["audio"]
    assert audio["input"]["turn_detection"] == {"type": "semantic_vad", "eagerness": "low",
                                                "create_response": False, "interrupt_response": False}
    assert audio["input"]["noise_reduction"] == {"type": "near_field"}
    assert audio["input"]["transcription"]["model"] == "gpt-4o-mini-transcribe"
    assert audio["input"]["transcription"]["language"] == "ar"
    assert audio["output"]["speed"] == 1.2 and audio["output"]["voice"] == "alloy"
    assert session["max_output_tokens"] == 800
    assert h.fake.invalid_events == [], "the fake validates every client event against the openai package"


def test_server_vad_numbers_reach_the_session_and_the_rest_stay_as_they_were(make_harness):
    h = make_harness(RealtimeScript(responses=[GREETING]))
    vad = {"type": "server_vad", "threshold": 0.62, "prefix_padding_ms": 200, "silence_duration_ms": 650}
    assert patch(h.live, h.business_id, {"realtime": {"turn_detection": vad}}).status_code == 200
    conn, session = first_session(h)
    assert conn.model == "gpt-realtime"
    expected = {**TODAYS_AUDIO, "input": {**TODAYS_AUDIO["input"], "turn_detection": {
        "type": "server_vad", "threshold": 0.62, "silence_duration_ms": 650, "prefix_padding_ms": 200,
        "create_response": False, "interrupt_response": False}}}
    assert without_prompt(session["audio"]) == expected
    assert "max_output_tokens" not in session


def test_without_settings_a_call_is_configured_as_before_and_the_env_model_is_the_default(make_harness):
    h = make_harness(RealtimeScript(responses=[GREETING]), openai_realtime_model="gpt-realtime-2025-08-28")
    assert shown(h.live, h.business_id) == {
        "model": "gpt-realtime-2025-08-28",
        "turn_detection": {"type": "server_vad", "threshold": 0.5, "prefix_padding_ms": 300, "silence_duration_ms": 400},
        "noise_reduction": "off", "speed": 1.0, "max_output_tokens": "inf",
        "transcription": {"model": "gpt-4o-transcribe", "language": "he"}}
    assert stored_choices(h.live, h.business_id) is None
    conn, session = first_session(h)
    assert conn.model == "gpt-realtime-2025-08-28"
    assert without_prompt(session["audio"]) == TODAYS_AUDIO
    assert set(session) == {"type", "instructions", "output_modalities", "audio", "tools", "tool_choice"}


def test_a_reconnected_session_uses_the_businesss_model_and_settings_again(make_harness):
    h = make_harness(RealtimeScript(responses=[GREETING, GREETING], drop_after_session_updated_s=1.5))
    assert patch(h.live, h.business_id, {"realtime": CHOSEN}).status_code == 200
    h.call()
    first, second = wait_for(lambda: len(h.fake.carried()) == 2 and h.fake.carried(), 20,
                             message="the reconnected session")
    second.wait_for_client_event("session.update", timeout=15)
    assert (first.model, second.model) == ("gpt-realtime-mini", "gpt-realtime-mini")
    assert second.client_events("session.update")[0]["session"] == first.client_events("session.update")[0]["session"]


def test_the_calls_cost_is_at_its_models_prices(make_harness):
    h = make_harness(RealtimeScript(responses=[GREETING]))
    assert patch(h.live, h.business_id, {"realtime": {"model": "gpt-realtime-mini"}}).status_code == 200
    caller = h.call()
    caller.wait_heard(GREETING.audio_ms, timeout=15)
    caller.stop()
    row = h.wait_ended(caller.call_sid, timeout=15).row
    u = row.usage
    assert u["model"] == "gpt-realtime-mini" and u["total_tokens"] > 0
    usage = Usage(input_text=u["input_text_tokens"], input_audio=u["input_audio_tokens"],
                  input_cached=u["input_cached_tokens"], output_text=u["output_text_tokens"],
                  output_audio=u["output_audio_tokens"])
    assert row.cost_usd == pricing.estimate_cost_usd("gpt-realtime-mini", usage)
    assert row.cost_usd < pricing.estimate_cost_usd("gpt-realtime", usage)


# --- the API ----------------------------------------------------------------------------

@pytest.mark.parametrize("choices, names", [
    ({"model": "gpt-5"}, ["model", "OPENAI_REALTIME_EXTRA_MODELS"]),
    ({"model": 5}, ["model: must be a string"]),
    ({"speed": 3}, ["speed: must be a number from 0.25 to 1.5"]),
    ({"speed": "1.2"}, ["speed: must be a number"]),
    ({"noise_reduction": "loud"}, ["noise_reduction: must be one of: off, near_field, far_field"]),
    ({"max_output_tokens": 0}, ['max_output_tokens: must be an integer from 1 to 4096, or "inf"']),
    ({"max_output_tokens": 5000}, ["max_output_tokens: must be an integer from 1 to 4096"]),
    ({"turn_detection": {"type": "push_to_talk"}}, ["turn_detection: type must be one of: server_vad, semantic_vad"]),
    ({"turn_detection": {"threshold": 0.5}}, ["turn_detection: needs a type"]),
    ({"turn_detection": {"type": "server_vad", "threshold": 1.5}},
     ["turn_detection.threshold: must be a number from 0.0 to 1.0"]),
    ({"turn_detection": {"type": "server_vad", "silence_duration_ms": 50}},
     ["turn_detection.silence_duration_ms: must be an integer from 100 to 5000"]),
    ({"turn_detection": {"type": "semantic_vad", "threshold": 0.5}}, ["turn_detection.threshold: unknown setting"]),
    ({"turn_detection": {"type": "semantic_vad", "eagerness": "very"}}, ["turn_detection.eagerness: must be one of"]),
    ({"transcription": {"model": "gpt-realtime-whisper"}}, ["transcription.model: must be one of"]),
    ({"transcription": {"language": "hebrew"}}, ["transcription.language: must be a two-letter ISO-639-1 code"]),
    ({"voice": "coral"}, ["voice: unknown setting"]),
    ("gpt-realtime-mini", ["must be an object"]),
])
def test_bad_settings_are_a_422_that_names_them_and_nothing_changes(live_server, business_id, choices, names):
    before = shown(live_server, business_id)
    answer = patch(live_server, business_id, {"realtime": choices, "greeting": "שלום"})
    assert answer.status_code == 422
    body = answer.json()
    assert "realtime" in body["error"] and set(body["fields"]) == {"realtime"}
    for name in names:
        assert name in body["fields"]["realtime"], body["fields"]["realtime"]
    assert shown(live_server, business_id) == before and stored_choices(live_server, business_id) is None
    assert requests.get(business_url(live_server, business_id), timeout=5).json()["greeting"] != "שלום"


def test_every_bad_setting_is_named_at_once(live_server, business_id):
    answer = patch(live_server, business_id, {"realtime": {"speed": 0, "noise_reduction": "x", "colour": "blue"}})
    assert answer.status_code == 422
    message = answer.json()["fields"]["realtime"]
    assert all(name in message for name in ("speed:", "noise_reduction:", "colour: unknown setting")), message


def test_a_patch_changes_only_the_settings_sent_and_null_resets(live_server, business_id):
    assert patch(live_server, business_id, {"realtime": {"speed": 1.3, "noise_reduction": "far_field"}}).status_code == 200
    assert patch(live_server, business_id, {"realtime": {"model": "gpt-realtime-mini"}}).status_code == 200
    assert stored_choices(live_server, business_id) == {"speed": 1.3, "noise_reduction": "far_field",
                                                        "model": "gpt-realtime-mini"}
    # A sub-object is replaced whole; what it leaves out takes its defaults.
    assert patch(live_server, business_id, {"realtime": {"transcription": {"language": "en"}}}).status_code == 200
    assert shown(live_server, business_id)["transcription"] == {"model": "gpt-4o-transcribe", "language": "en"}
    answer = patch(live_server, business_id, {"realtime": {"speed": None}})
    assert answer.status_code == 200 and answer.json()["realtime"]["speed"] == 1.0
    assert shown(live_server, business_id)["noise_reduction"] == "far_field"
    assert patch(live_server, business_id, {"realtime": None}).status_code == 200
    assert stored_choices(live_server, business_id) is None
    assert shown(live_server, business_id)["model"] == "gpt-realtime"


def test_a_new_business_may_come_with_settings(live_server):
    answer = requests.post(f"{live_server.base_url}/api/businesses", timeout=5,
                           json={"name": "מספרה", "realtime": {"speed": 0.9, "model": None}})
    assert answer.status_code == 201, answer.text
    assert answer.json()["realtime"]["speed"] == 0.9
    assert stored_choices(live_server, answer.json()["id"]) == {"speed": 0.9}


def test_changes_are_audited_by_setting_name(live_server, business_id):
    assert patch(live_server, business_id, {"greeting": "שלום",
                                            "realtime": {"model": "gpt-realtime-mini", "speed": 1.1}}).status_code == 200
    assert patch(live_server, business_id, {"realtime": None}).status_code == 200
    with live_server.db.session() as session:
        fields = [entry.fields for entry in session.query(AuditEntry).order_by(AuditEntry.id)]
    assert [sorted(f) for f in fields] == [["greeting", "realtime.model", "realtime.speed"], ["realtime"]]


def test_models_beyond_the_packages_list_are_the_operators_to_allow(make_harness):
    h = make_harness(RealtimeScript(responses=[GREETING]), openai_realtime_extra_models=("gpt-realtime-next",))
    refused = patch(h.live, h.business_id, {"realtime": {"model": "gpt-realtime-other"}})
    assert refused.status_code == 422 and "OPENAI_REALTIME_EXTRA_MODELS" in refused.json()["fields"]["realtime"]
    assert patch(h.live, h.business_id, {"realtime": {"model": "gpt-realtime-next"}}).status_code == 200
    conn, _ = first_session(h)
    assert conn.model == "gpt-realtime-next"


def test_a_stored_model_the_operator_withdrew_falls_back_to_the_default(make_harness):
    h = make_harness(RealtimeScript(responses=[GREETING]))
    with h.live.db.session() as session:
        session.get(Business, h.business_id).realtime = {"model": "gpt-realtime-next", "speed": 1.1}
    assert shown(h.live, h.business_id)["model"] == "gpt-realtime"
    conn, session = first_session(h)
    assert conn.model == "gpt-realtime" and "speed" not in session["audio"]["output"]


# --- the pure parts ---------------------------------------------------------------------

def test_the_options_are_the_openai_packages():
    assert {"gpt-realtime", "gpt-realtime-mini"} <= set(rs.MODELS)
    assert "marin" in rs.VOICES and rs.NOISE_REDUCTION == ("off", "near_field", "far_field")
    assert set(rs.EAGERNESS) == {"low", "medium", "high", "auto"}
    assert "gpt-4o-transcribe" in rs.TRANSCRIPTION_MODELS and "gpt-realtime-whisper" not in rs.TRANSCRIPTION_MODELS


@pytest.mark.parametrize("detection, noise, transcription", list(itertools.product(
    [{"type": "server_vad", "threshold": 1, "prefix_padding_ms": 0, "silence_duration_ms": 5000},
     *({"type": "semantic_vad", "eagerness": e} for e in rs.EAGERNESS)],
    rs.NOISE_REDUCTION, rs.TRANSCRIPTION_MODELS)))
def test_every_combination_offered_makes_a_session_update_the_package_accepts(detection, noise, transcription):
    choices = rs.parse_choices({"turn_detection": detection, "noise_reduction": noise, "speed": 0.25,
                                "max_output_tokens": 4096, "transcription": {"model": transcription}},
                               (), "gpt-realtime").given()
    settings = rs.effective(choices, "gpt-realtime")
    validate_client_event(session_update(rs.session_config(settings, instructions="x", voice="cedar",
                                                           transcription_prompt="p")))


def test_the_url_carries_the_model_escaped():
    assert realtime_url("wss://api.openai.com/v1/realtime", "gpt-realtime-mini") == \
        "wss://api.openai.com/v1/realtime?model=gpt-realtime-mini"
    assert realtime_url("ws://127.0.0.1:9/v1/realtime?x=1", "a&b") == "ws://127.0.0.1:9/v1/realtime?x=1&model=a%26b"


@pytest.mark.parametrize("model, usd", [
    ("gpt-realtime", 32.0), ("gpt-realtime-2025-08-28", 32.0), ("gpt-realtime-mini", 10.0),
    ("gpt-realtime-mini-2025-12-15", 10.0), ("gpt-4o-realtime-preview-2024-12-17", 40.0),
    ("gpt-4o-realtime-preview-2024-10-01", 100.0), ("gpt-4o-mini-realtime-preview", 10.0),
    # Not on the list: the family's prices.
    ("gpt-realtime-2.1-mini", 10.0), ("gpt-realtime-2", 32.0),
])
def test_a_million_audio_tokens_in_cost_the_models_list_price(model, usd):
    assert pricing.estimate_cost_usd(model, Usage(input_audio=1_000_000)) == usd


def test_cached_tokens_are_billed_at_each_modalitys_cached_rate():
    # gpt-realtime-mini: cached text $0.06, cached audio $0.30, out $2.40 text and $20 audio (per 1M).
    usage = Usage(input_text=500_000, input_audio=500_000, input_cached=1_000_000,
                  output_text=1_000_000, output_audio=1_000_000)
    assert pricing.estimate_cost_usd("gpt-realtime-mini", usage) == pytest.approx(0.03 + 0.15 + 2.40 + 20.0)


def test_merge_replaces_keys_and_null_drops_them():
    assert rs.merge({"speed": 1.1, "model": "m"}, {"speed": None, "noise_reduction": "far_field"}) == {
        "model": "m", "noise_reduction": "far_field"}
    assert rs.merge({"speed": 1.1}, {"speed": None}) is None
    assert rs.merge({"speed": 1.1}, None) is None


def test_the_operator_names_extra_models_in_the_environment():
    from services.settings import Settings, SettingsError

    env = {"OPENAI_REALTIME_EXTRA_MODELS": " gpt-realtime-next, my-realtime-ft ,"}
    assert Settings.from_env(env).openai_realtime_extra_models == ("gpt-realtime-next", "my-realtime-ft")
    assert Settings.from_env({}).openai_realtime_extra_models == ()
    with pytest.raises(SettingsError):
        Settings.from_env({"OPENAI_REALTIME_EXTRA_MODELS": "gpt-realtime&evil=1"})
