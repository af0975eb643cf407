"""Call-control configuration from the environment: defaults, and errors that name the variable."""
import pytest

from services.settings import Settings, SettingsError


def test_defaults_are_the_production_values():
    settings = Settings.from_env({"SECRET_KEY": "x"})
    assert settings.max_concurrent_calls == 50
    assert settings.twilio_api_base_url == "https://api.twilio.com"
    assert settings.timing.silence_s == 8.0 and settings.timing.max_call_s == 600.0


def test_values_are_read():
    settings = Settings.from_env({"SECRET_KEY": "x", "MAX_CONCURRENT_CALLS": "7", "CALL_SILENCE_S": "12.5",
                                  "CALL_MAX_DURATION_S": "300", "TWILIO_API_BASE_URL": "http://127.0.0.1:9/"})
    assert settings.max_concurrent_calls == 7
    assert settings.timing.silence_s == 12.5 and settings.timing.max_call_s == 300
    assert settings.twilio_api_base_url == "http://127.0.0.1:9"


@pytest.mark.parametrize("name, value", [
    ("MAX_CONCURRENT_CALLS", "0"), ("MAX_CONCURRENT_CALLS", "many"), ("CALL_SILENCE_S", "-1"),
    ("CALL_MAX_DURATION_S", "forever"), ("TWILIO_API_BASE_URL", "api.twilio.com"),
])
def test_bad_values_are_refused_naming_the_variable(name, value):
    with pytest.raises(SettingsError, match=name):
        Settings.from_env({"SECRET_KEY": "x", name: value})
