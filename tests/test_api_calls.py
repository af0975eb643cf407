"""The admin API's call records, over HTTP against a live server."""
from datetime import datetime, timedelta, timezone

import pytest
import requests

from services.store.models import Call, Turn
from tests.conftest import BUSINESS_NUMBER, CALLER_NUMBER, add_business

T0 = datetime(2025, 3, 1, 8, 0, tzinfo=timezone.utc)


def api(live, path=""):
    return f"{live.base_url}/api/calls{path}"


def add_call(live, sid, business_id, *, minutes, status="completed", turns=(), **fields):
    with live.db.session() as session:
        call = Call(call_sid=sid, business_id=business_id, from_number=CALLER_NUMBER, to_number=BUSINESS_NUMBER,
                    status=status, started_at=T0 + timedelta(minutes=minutes), **fields)
        call.turns = [Turn(**turn) for turn in turns]
        session.add(call)


@pytest.fixture
def calls(live_server, business_id):
    """Three calls of one business, one of another: sids say their order in time."""
    other = add_business(live_server, "+972300000002", name="Other")
    add_call(live_server, "CA1", business_id, minutes=0)
    add_call(live_server, "CA2", business_id, minutes=10, status="no-answer")
    add_call(live_server, "CA3", business_id, minutes=20, status="in-progress")
    add_call(live_server, "CA4", other, minutes=30)
    return business_id, other


def sids(response):
    assert response.status_code == 200, response.text
    return [c["call_sid"] for c in response.json()["calls"]]


def test_list_is_newest_first_and_filters_combine(live_server, calls):
    mine, other = calls
    assert sids(requests.get(api(live_server), timeout=5)) == ["CA4", "CA3", "CA2", "CA1"]
    assert sids(requests.get(api(live_server), params={"business_id": mine}, timeout=5)) == ["CA3", "CA2", "CA1"]
    assert sids(requests.get(api(live_server), params={"business_id": other}, timeout=5)) == ["CA4"]
    assert sids(requests.get(api(live_server), params={"status": "completed"}, timeout=5)) == ["CA4", "CA1"]
    assert sids(requests.get(api(live_server), params={"business_id": mine, "status": "completed"}, timeout=5)) == ["CA1"]


def test_since_takes_utc_z_and_offsets(live_server, calls):
    assert sids(requests.get(api(live_server), params={"since": "2025-03-01T08:10:00Z"}, timeout=5)) == ["CA4", "CA3", "CA2"]
    # 10:15 in Israel (+02:00) is 08:15 UTC.
    assert sids(requests.get(api(live_server), params={"since": "2025-03-01T10:15:00+02:00"}, timeout=5)) == ["CA4", "CA3"]
    assert sids(requests.get(api(live_server), params={"since": "2025-03-02T00:00:00Z"}, timeout=5)) == []


def test_limit_and_offset_page_through(live_server, calls):
    page = requests.get(api(live_server), params={"limit": 2, "offset": 1}, timeout=5)
    assert sids(page) == ["CA3", "CA2"]
    assert page.json()["limit"] == 2 and page.json()["offset"] == 1
    assert requests.get(api(live_server), timeout=5).json()["limit"] == 50


@pytest.mark.parametrize("params, field", [
    ({"since": "yesterday"}, "since"),
    ({"limit": 501}, "limit"),
    ({"limit": 0}, "limit"),
    ({"offset": -1}, "offset"),
    ({"business_id": "abc"}, "business_id"),
    ({"status": "exploded"}, "status"),
    ({"bussiness_id": 1}, "bussiness_id"),
])
def test_bad_query_parameters_are_422(live_server, params, field):
    response = requests.get(api(live_server), params=params, timeout=5)
    assert response.status_code == 422
    assert list(response.json()["fields"]) == [field]


def test_one_call_has_its_times_turns_metrics_and_cost(live_server, business_id):
    add_call(
        live_server, "CAdetail", business_id, minutes=0, direction="inbound",
        answered_at=T0 + timedelta(seconds=1), ended_at=T0 + timedelta(seconds=61), duration_s=60.0,
        end_reason="caller_hangup", metrics={"first_audio_ms": 640, "response_latency_ms": {"p50": 710}},
        usage={"input_tokens": 1200, "output_tokens": 300}, cost_usd=0.042,
        turns=[
            dict(speaker="agent", text="שלום, מספרת הבדיקה.", started_at=T0 + timedelta(seconds=2)),
            dict(speaker="caller", text="אני רוצה תור למחר", started_at=T0 + timedelta(seconds=5)),
            dict(speaker="agent", text="בשמחה, לאיזו שעה?", started_at=T0 + timedelta(seconds=8),
                 interrupted=True, latency_ms=812.5),
        ],
    )
    response = requests.get(api(live_server, "/CAdetail"), timeout=5)
    assert response.status_code == 200
    call = response.json()
    assert call["from"] == CALLER_NUMBER and call["to"] == BUSINESS_NUMBER
    assert call["business_id"] == business_id and call["direction"] == "inbound" and call["status"] == "completed"
    assert call["started_at"] == "2025-03-01T08:00:00Z"
    assert call["answered_at"] == "2025-03-01T08:00:01Z" and call["ended_at"] == "2025-03-01T08:01:01Z"
    assert call["duration_s"] == 60.0 and call["end_reason"] == "caller_hangup"
    assert call["metrics"]["response_latency_ms"] == {"p50": 710}
    assert call["usage"]["output_tokens"] == 300 and call["cost_usd"] == 0.042
    assert [t["speaker"] for t in call["turns"]] == ["agent", "caller", "agent"]
    assert call["turns"][1] == {"speaker": "caller", "text": "אני רוצה תור למחר", "started_at": "2025-03-01T08:00:05Z",
                                "interrupted": False, "latency_ms": None}
    assert call["turns"][2]["interrupted"] is True and call["turns"][2]["latency_ms"] == 812.5
    assert call["summary"] is None and call["extraction"] is None and call["post_call"] is None  # not processed yet


def test_list_items_leave_out_the_turns(live_server, calls):
    assert all("turns" not in c for c in requests.get(api(live_server), timeout=5).json()["calls"])


def test_unknown_call_is_404(live_server):
    response = requests.get(api(live_server, "/CAnope"), timeout=5)
    assert response.status_code == 404
    assert response.json() == {"error": "call CAnope not found"}


def test_a_deleted_business_keeps_its_calls(live_server, calls):
    mine, _ = calls
    assert requests.delete(f"{live_server.base_url}/api/businesses/{mine}", timeout=5).status_code == 204
    call = requests.get(api(live_server, "/CA1"), timeout=5).json()
    assert call["business_id"] is None
