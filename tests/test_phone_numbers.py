"""Phone numbers as callers say them, in E.164: one reading for the lead and for a booking."""
import pytest

from services.store.formats import israeli_e164


@pytest.mark.parametrize("said, e164", [
    ("050-123-4567", "+972501234567"),
    ("(050) 123.4567", "+972501234567"),
    ("+972 50 1234567", "+972501234567"),
    ("972501234567", "+972501234567"),
    ("00972501234567", "+972501234567"),
    ("03-1234567", "+97231234567"),
    ("+44 20 7946 0958", "+442079460958"),
    ("123", None),
    ("", None),
    (None, None),
    ("לא יודע", None),
])
def test_what_the_caller_said_as_e164(said, e164):
    assert israeli_e164(said) == e164
