"""The audit log: every change through the API, who made it and which fields, never a secret."""
import dataclasses
import json

import requests

from services.store.models import AuditEntry
from tests.fakes.twilio_rest import FakeTwilioRest
from tests.tenants import add_tenant, bearer, make_key

SID = "AC" + "3" * 32
WEBHOOK_SECRET = "whsec_audit_test_value_0123456789"


def _log(live, headers=None, **params):
    response = requests.get(f"{live.base_url}/api/audit-log", params=params, headers=headers or {}, timeout=5)
    assert response.status_code == 200, response.text
    return response.json()["audit_log"]


def _what(entries):
    return [(e["method"], e["route"], e["object"]["type"], e["fields"]) for e in entries]


def test_every_change_is_recorded_with_field_names_and_no_secret(make_live_server, settings):
    twilio = FakeTwilioRest().start()
    try:
        live = make_live_server(dataclasses.replace(settings, twilio_account_sid=SID, twilio_auth_token="tok",
                                                    twilio_api_base_url=twilio.base_url))
        api = f"{live.base_url}/api"
        created = requests.post(f"{api}/businesses", json={"name": "מספרה", "phone_numbers": ["+972300000201"],
                                                           "webhook_secret": WEBHOOK_SECRET}, timeout=5)
        assert created.status_code == 201
        business_id = created.json()["id"]
        assert requests.patch(f"{api}/businesses/{business_id}", json={"greeting": "שלום",
                                                                        "webhook_secret": WEBHOOK_SECRET + "2"},
                              timeout=5).status_code == 200
        lead = requests.post(f"{api}/leads", json={"business_id": business_id, "phone": "+972541112233",
                                                   "name": "דנה"}, timeout=5).json()
        key = make_key(live, business_id, name="crm")
        placed = requests.post(f"{api}/calls/outbound", json={"business_id": business_id, "to": "+972541112233"},
                               timeout=5)
        assert placed.status_code == 201, placed.text
        assert requests.delete(f"{api}/businesses/{business_id}/api-keys/{key['id']}", timeout=5).status_code == 204
        # Reads are not changes.
        requests.get(f"{api}/calls", timeout=5)
        requests.get(f"{api}/businesses/{business_id}", timeout=5)
        assert requests.delete(f"{api}/businesses/{business_id}", timeout=5).status_code == 204

        entries = _log(live)
        assert _what(entries) == [
            ("DELETE", "/api/businesses/<int:business_id>", "business", []),
            ("DELETE", "/api/businesses/<int:business_id>/api-keys/<int:key_id>", "api_key", ["revoked"]),
            ("POST", "/api/calls/outbound", "call", ["business_id", "to"]),
            ("POST", "/api/businesses/<int:business_id>/api-keys", "api_key", ["name"]),
            ("POST", "/api/leads", "lead", ["business_id", "name", "phone"]),
            ("PATCH", "/api/businesses/<int:business_id>", "business", ["greeting", "webhook_secret"]),
            ("POST", "/api/businesses", "business", ["name", "phone_numbers", "webhook_secret"]),
        ]
        assert [e["object"]["id"] for e in entries] == [
            str(business_id), str(key["id"]), placed.json()["call_sid"], str(key["id"]), str(lead["id"]),
            str(business_id), str(business_id)]
        assert [e["status"] for e in entries] == [204, 204, 201, 201, 201, 200, 201]
        assert all(e["actor"] == {"kind": "admin", "api_key_id": None} for e in entries)
        assert all(e["business_id"] == business_id and e["client_addr"] == "127.0.0.1" for e in entries)
        assert all(e["at"].endswith("Z") for e in entries)
        # The business is gone; its trail stays. Neither the answer nor the rows hold a secret.
        with live.db.session() as session:
            rows = json.dumps([[r.actor, r.route, r.object_id, r.fields, r.client_addr]
                               for r in session.query(AuditEntry)], ensure_ascii=False)
        for secret in (WEBHOOK_SECRET, key["key"], key["key"][11:], "tok"):
            assert secret not in rows and secret not in json.dumps(entries, ensure_ascii=False)
    finally:
        twilio.stop()


def test_a_keys_changes_name_the_key_and_it_sees_only_its_business(live_server):
    a, b = add_tenant(live_server, 1), add_tenant(live_server, 2)
    made = make_key(live_server, a.business_id)
    key = bearer(made["key"])
    make_key(live_server, b.business_id)
    assert requests.patch(f"{live_server.base_url}/api/businesses/{a.business_id}", json={"greeting": "היי"},
                          headers=key, timeout=5).status_code == 200
    # Refused changes are not changes.
    assert requests.patch(f"{live_server.base_url}/api/businesses/{b.business_id}", json={"greeting": "x"},
                          headers=key, timeout=5).status_code == 404
    mine = _log(live_server, key)
    assert [(e["object"]["type"], e["actor"]) for e in mine] == [
        ("business", {"kind": "key", "api_key_id": made["id"]}),
        ("api_key", {"kind": "admin", "api_key_id": None})]
    assert {e["business_id"] for e in mine} == {a.business_id}
    assert _log(live_server, key, business_id=b.business_id) == []
    everyone = _log(live_server)
    assert {e["business_id"] for e in everyone} == {a.business_id, b.business_id} and len(everyone) == 3
    assert [e["business_id"] for e in _log(live_server, business_id=b.business_id)] == [b.business_id]


def test_the_log_is_paginated_newest_first(live_server):
    a = add_tenant(live_server, 1)
    for index in range(5):
        assert requests.patch(f"{live_server.base_url}/api/businesses/{a.business_id}",
                              json={"greeting": f"שלום {index}"}, timeout=5).status_code == 200
    everything = _log(live_server)
    assert len(everything) == 5
    ids = [e["id"] for e in everything]
    assert ids == sorted(ids, reverse=True)
    pages = [_log(live_server, limit=2, offset=offset) for offset in (0, 2, 4)]
    assert [[e["id"] for e in page] for page in pages] == [ids[0:2], ids[2:4], ids[4:]]
    response = requests.get(f"{live_server.base_url}/api/audit-log", params={"limit": 0}, timeout=5)
    assert response.status_code == 422
