"""The admin API's leads, over HTTP against a live server."""
import requests

from tests.conftest import CALLER_NUMBER, add_business


def api(live):
    return f"{live.base_url}/api/leads"


def test_create_then_list_by_business_and_phone(live_server, business_id):
    other = add_business(live_server, "+972300000002", name="Other")
    response = requests.post(api(live_server), json={"business_id": business_id, "phone": CALLER_NUMBER,
                                                     "name": "דנה", "gender": "female", "notes": "מעדיפה בקרים"}, timeout=5)
    assert response.status_code == 201
    lead = response.json()
    assert (lead["name"], lead["gender"], lead["notes"], lead["phone"]) == ("דנה", "female", "מעדיפה בקרים", CALLER_NUMBER)
    assert lead["created_at"].endswith("Z")
    second = requests.post(api(live_server), json={"business_id": other, "phone": CALLER_NUMBER}, timeout=5)
    assert second.status_code == 201
    assert second.json()["name"] is None and second.json()["notes"] == ""

    listed = requests.get(api(live_server), params={"business_id": business_id}, timeout=5).json()["leads"]
    assert listed == [lead]
    by_phone = requests.get(api(live_server), params={"phone": CALLER_NUMBER}, timeout=5).json()["leads"]
    assert {item["business_id"] for item in by_phone} == {business_id, other}
    assert requests.get(api(live_server), params={"phone": "+972509999999"}, timeout=5).json()["leads"] == []


def test_the_same_phone_twice_for_one_business_is_409(live_server, business_id):
    body = {"business_id": business_id, "phone": CALLER_NUMBER}
    assert requests.post(api(live_server), json=body, timeout=5).status_code == 201
    response = requests.post(api(live_server), json={**body, "name": "again"}, timeout=5)
    assert response.status_code == 409
    assert CALLER_NUMBER in response.json()["error"]
    assert len(requests.get(api(live_server), timeout=5).json()["leads"]) == 1


def test_invalid_leads_are_422_and_unknown_business_404(live_server, business_id):
    response = requests.post(api(live_server), json={"business_id": business_id, "phone": "050-1234567",
                                                     "gender": "other", "age": 30}, timeout=5)
    assert response.status_code == 422
    assert set(response.json()["fields"]) == {"phone", "gender", "age"}
    response = requests.post(api(live_server), json={"phone": CALLER_NUMBER}, timeout=5)
    assert response.status_code == 422 and response.json()["fields"] == {"business_id": "required"}
    response = requests.post(api(live_server), json={"business_id": 999, "phone": CALLER_NUMBER}, timeout=5)
    assert response.status_code == 404
    assert requests.get(api(live_server), params={"phone": "0501234567"}, timeout=5).status_code == 422


def test_malformed_lead_body_is_400(live_server):
    # A form body is not JSON: refused by its content type.
    assert requests.post(api(live_server), data="phone=+972501234567", timeout=5).status_code == 415


def test_deleting_a_business_deletes_its_leads(live_server, business_id):
    requests.post(api(live_server), json={"business_id": business_id, "phone": CALLER_NUMBER}, timeout=5)
    assert requests.delete(f"{live_server.base_url}/api/businesses/{business_id}", timeout=5).status_code == 204
    assert requests.get(api(live_server), timeout=5).json()["leads"] == []
