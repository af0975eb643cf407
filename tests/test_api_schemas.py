"""The admin API's body and filter models, without a server: what each accepts and how it says no."""
from datetime import datetime, timezone

import pytest

from server.api_schemas import (
    AppointmentFilter,
    BusinessCreate,
    BusinessPatch,
    CallFilter,
    LeadCreate,
    LeadFilter,
    OutboundCallRequest,
    ValidationError,
    parse,
)

NUMBER = "+972501234567"


def refused(model, data):
    with pytest.raises(ValidationError) as caught:
        parse(model, data)
    return caught.value.fields


def test_a_patch_gives_only_the_fields_sent():
    assert parse(BusinessPatch, {"voice": "marin", "transfer_number": None}).given() == {
        "voice": "marin", "transfer_number": None}
    assert parse(BusinessPatch, {}).given() == {}
    assert parse(BusinessCreate, {"name": "Solo"}).given() == {"name": "Solo"}


def test_null_clears_only_the_settings_that_may_be_empty():
    assert parse(BusinessPatch, {"webhook_url": None}).given() == {"webhook_url": None}
    assert refused(BusinessPatch, {"voice": None, "name": None, "record_calls": None}) == {
        "voice": "must be one of: alloy, ash, ballad, coral, echo, sage, shimmer, verse, marin, cedar",
        "name": "must be a string",
        "record_calls": "must be true or false",
    }


def test_json_types_are_taken_as_sent():
    assert refused(BusinessPatch, {"greeting": 5, "use_customer_name": "yes", "max_concurrent_calls": "3",
                                   "appointment_minutes": True}) == {
        "greeting": "must be a string",
        "use_customer_name": "must be true or false",
        "max_concurrent_calls": "must be an integer from 1 to 1000",
        "appointment_minutes": "must be an integer from 5 to 480",
    }
    assert refused(OutboundCallRequest, {"business_id": 1.0, "to": NUMBER}) == {
        "business_id": "must be an integer from 1 to 9223372036854775807"}


def test_each_problem_is_named_at_once_in_plain_words():
    fields = refused(BusinessCreate, {
        "phone_numbers": [NUMBER, "0501234567"], "transfer_number": "+0123", "timezone": "Mars/Olympus",
        "webhook_url": "ftp://crm.example.com", "webhook_secret": "short", "voicemail_message": "x" * 1001,
        "colour": "blue",
    })
    assert fields == {
        "name": "required",
        "phone_numbers": '"0501234567" is not an E.164 number such as +972501234567',
        "transfer_number": "must be an E.164 number such as +972501234567",
        "timezone": "must be an IANA time zone such as Asia/Jerusalem",
        "webhook_url": "must be an https:// URL of at most 500 characters",
        "webhook_secret": "must be at least 16 characters",
        "voicemail_message": "must be at most 1000 characters",
        "colour": "unknown field",
    }
    assert refused(BusinessPatch, {"name": "  "}) == {"name": "must not be empty"}
    assert refused(BusinessPatch, {"phone_numbers": [NUMBER, NUMBER]}) == {"phone_numbers": f"{NUMBER} is listed twice"}
    assert refused(BusinessPatch, {"webhook_url": "http://[::1"})  # urlsplit's own error is not a 500


def test_working_hours_come_back_in_week_order():
    hours = parse(BusinessPatch, {"working_hours": {"sat": [["20:00", "24:00"]], "sun": []}}).given()["working_hours"]
    assert list(hours) == ["sun", "sat"]
    assert refused(BusinessPatch, {"working_hours": {"mon": [["09:00", "13:00"], ["12:00", "15:00"]]}}) == {
        "working_hours": "mon: ranges overlap"}


def test_a_lead_keeps_its_defaults_unless_sent():
    lead = parse(LeadCreate, {"business_id": 3, "phone": NUMBER})
    assert (lead.business_id, lead.phone, lead.given()) == (3, NUMBER, {"business_id": 3, "phone": NUMBER})
    assert refused(LeadCreate, {"phone": NUMBER, "gender": "other", "name": "x" * 201}) == {
        "business_id": "required", "gender": "must be one of: male, female", "name": "must be at most 200 characters"}


def test_filters_read_query_text_and_page_by_default():
    query = parse(CallFilter, {"business_id": "7", "status": "no-answer", "since": "2025-03-01T10:15:00+02:00"})
    assert (query.business_id, query.status, query.limit, query.offset) == (7, "no-answer", 50, 0)
    assert query.since == datetime(2025, 3, 1, 8, 15, tzinfo=timezone.utc)
    assert parse(CallFilter, {"since": "2025-03-01T08:00:00"}).since.tzinfo == timezone.utc
    for value in ("+7", " 7", "7.0", "-1", "9223372036854775808"):
        assert refused(LeadFilter, {"business_id": value}) == {
            "business_id": "must be an integer from 1 to 9223372036854775807"}, value
    assert refused(CallFilter, {"since": "1700000000"}) == {
        "since": "must be an ISO-8601 datetime such as 2025-01-31T08:00:00Z"}


def test_appointments_filter_on_from_and_to():
    query = parse(AppointmentFilter, {"from": "2025-01-01T00:00:00Z", "to": "2025-01-02T00:00:00Z", "limit": "2"})
    assert (query.from_.day, query.to.day, query.limit) == (1, 2, 2)
    assert refused(AppointmentFilter, {"from_": "2025-01-01T00:00:00Z"}) == {"from_": "unknown field"}
    assert refused(AppointmentFilter, {"phone": "123", "from": "yesterday"}) == {
        "phone": "must be an E.164 number such as +972501234567",
        "from": "must be an ISO-8601 datetime such as 2025-01-31T08:00:00Z",
    }


def test_the_models_describe_themselves_for_a_form():
    schema = BusinessCreate.model_json_schema()
    assert schema["required"] == ["name"] and schema["additionalProperties"] is False
    assert schema["properties"]["max_concurrent_calls"]["maximum"] == 1000
    assert "cedar" in schema["properties"]["voice"]["enum"]
    assert OutboundCallRequest.model_json_schema()["required"] == ["business_id", "to"]
