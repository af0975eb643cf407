"""Per-business API keys: shown once, stored hashed, fenced to their own business."""
import dataclasses
import json
from datetime import timedelta
from pathlib import Path

import requests
from sqlalchemy import MetaData, select, update
from sqlalchemy.engine import make_url

from services.store.api_keys import business_id_for_key
from services.store.models import ApiKey, as_utc
from tests import databases
from tests.fakes.twilio_rest import FakeTwilioRest
from tests.tenants import add_tenant, bearer, make_key

SID = "AC" + "2" * 32


def test_a_key_is_shown_once_and_only_its_hash_is_stored(live_server):
    a = add_tenant(live_server, 1)
    made = make_key(live_server, a.business_id, name="crm")
    raw = made["key"]
    assert raw.startswith("bk_") and len(raw) > 40
    assert made["prefix"] == raw[:11] and made["name"] == "crm" and made["revoked"] is False
    assert made["last_used_at"] is None
    base = f"{live_server.base_url}/api/businesses/{a.business_id}/api-keys"
    listed = requests.get(base, timeout=5).json()["api_keys"]
    assert [k["id"] for k in listed] == [made["id"]]
    assert raw not in json.dumps(listed) and "key" not in listed[0]
    one = requests.get(f"{base}/{made['id']}", timeout=5).json()
    assert raw not in json.dumps(one) and one["prefix"] == made["prefix"]
    # The key works, so it is known to the server; yet no table holds it, only its prefix.
    assert requests.get(f"{live_server.base_url}/api/calls", headers=bearer(raw), timeout=5).status_code == 200
    stored = _every_stored_value(live_server)
    assert made["prefix"] in stored
    assert raw not in stored and raw[11:] not in stored
    if not databases.is_postgres():
        path = Path(make_url(live_server.settings.database_url).database)
        files = b"".join(p.read_bytes() for p in path.parent.glob(path.name + "*"))
        assert made["prefix"].encode() in files and raw[11:].encode() not in files


def test_a_key_sees_only_its_own_business(make_live_server, settings):
    twilio = FakeTwilioRest().start()
    try:
        live = make_live_server(dataclasses.replace(settings, twilio_account_sid=SID, twilio_auth_token="tok",
                                                    twilio_api_base_url=twilio.base_url))
        a, b = add_tenant(live, 1), add_tenant(live, 2)
        key = bearer(make_key(live, a.business_id)["key"])
        api = f"{live.base_url}/api"

        def get(path, **params):
            return requests.get(f"{api}{path}", params=params, headers=key, timeout=5)

        # Another business's objects do not exist for this key; the same paths of its own do.
        for path in (f"/businesses/{b.business_id}", f"/businesses/{b.business_id}/prompt-preview",
                     f"/calls/{b.call_sid}"):
            response = get(path)
            assert response.status_code == 404 and "error" in response.json(), path
        for path in (f"/businesses/{a.business_id}", f"/businesses/{a.business_id}/prompt-preview",
                     f"/calls/{a.call_sid}"):
            assert get(path).status_code == 200, path
        # Worded as for a call that does not exist at all.
        assert get(f"/calls/{b.call_sid}").json()["error"] == get("/calls/CA404").json()["error"].replace(
            "CA404", b.call_sid)
        # Lists hold only its own, whatever filter it asks for.
        assert [c["call_sid"] for c in get("/calls").json()["calls"]] == [a.call_sid]
        assert get("/calls", business_id=b.business_id).json()["calls"] == []
        assert [lead["id"] for lead in get("/leads").json()["leads"]] == [a.lead_id]
        assert get("/leads", business_id=b.business_id).json()["leads"] == []
        assert [x["id"] for x in get("/appointments").json()["appointments"]] == [a.appointment_id]
        assert get("/appointments", business_id=b.business_id).json()["appointments"] == []
        # Nor can it change another's.
        other = [
            requests.patch(f"{api}/businesses/{b.business_id}", json={"greeting": "x"}, headers=key, timeout=5),
            requests.post(f"{api}/leads", json={"business_id": b.business_id, "phone": "+972541112233"},
                          headers=key, timeout=5),
            requests.post(f"{api}/calls/{b.call_sid}/reprocess", headers=key, timeout=5),
            requests.post(f"{api}/calls/outbound", json={"business_id": b.business_id, "to": "+972541112233"},
                          headers=key, timeout=5),
            requests.post(f"{api}/calls/outbound", json={"business_id": a.business_id, "to": "+972541112233",
                                                         "lead_id": b.lead_id}, headers=key, timeout=5),
        ]
        assert [r.status_code for r in other] == [404] * 5, [r.text for r in other]
        assert twilio.of("create") == []
        # Its own it can.
        own = requests.patch(f"{api}/businesses/{a.business_id}", json={"greeting": "שלום לכם"}, headers=key,
                             timeout=5)
        assert own.status_code == 200 and own.json()["greeting"] == "שלום לכם"
        placed = requests.post(f"{api}/calls/outbound", json={"business_id": a.business_id, "to": "+972541112233",
                                                              "lead_id": a.lead_id}, headers=key, timeout=5)
        assert placed.status_code == 201, placed.text
        assert len(twilio.of("create")) == 1
        lead = requests.post(f"{api}/leads", json={"business_id": a.business_id, "phone": "+972541112233"},
                             headers=key, timeout=5)
        assert lead.status_code == 201
        # The admin still sees everything.
        assert {c["call_sid"] for c in requests.get(f"{api}/calls", timeout=5).json()["calls"]} >= {
            a.call_sid, b.call_sid}
        assert requests.get(f"{api}/calls/{b.call_sid}", timeout=5).status_code == 200
    finally:
        twilio.stop()


def test_the_admins_routes_refuse_a_key(live_server):
    a, b = add_tenant(live_server, 1), add_tenant(live_server, 2)
    key = bearer(make_key(live_server, a.business_id)["key"])
    api = f"{live_server.base_url}/api"
    refused = [
        requests.get(f"{api}/businesses", headers=key, timeout=5),
        requests.post(f"{api}/businesses", json={"name": "חדש"}, headers=key, timeout=5),
        requests.delete(f"{api}/businesses/{a.business_id}", headers=key, timeout=5),
        requests.delete(f"{api}/businesses/{b.business_id}", headers=key, timeout=5),
        requests.post(f"{api}/businesses/{b.business_id}/api-keys", json={}, headers=key, timeout=5),
        requests.get(f"{api}/businesses/{b.business_id}/api-keys", headers=key, timeout=5),
        requests.post(f"{api}/businesses/999/api-keys", json={}, headers=key, timeout=5),
        # What routes calls to a business and its share of the server stay the operator's.
        requests.patch(f"{api}/businesses/{a.business_id}", json={"phone_numbers": ["+972300000999"]},
                       headers=key, timeout=5),
        requests.patch(f"{api}/businesses/{a.business_id}", json={"max_concurrent_calls": 100}, headers=key,
                       timeout=5),
    ]
    assert [r.status_code for r in refused] == [403] * len(refused), [r.text for r in refused]
    assert all("error" in r.json() for r in refused)
    assert requests.get(f"{api}/businesses/{b.business_id}", timeout=5).status_code == 200  # not deleted
    assert requests.get(f"{api}/businesses/{a.business_id}", timeout=5).json()["phone_numbers"] == [a.number]
    # Its own business's keys it manages (rotation).
    second = requests.post(f"{api}/businesses/{a.business_id}/api-keys", json={"name": "new"}, headers=key,
                           timeout=5)
    assert second.status_code == 201 and second.json()["key"]


def test_a_revoked_or_unknown_key_gets_401(live_server):
    a = add_tenant(live_server, 1)
    made = make_key(live_server, a.business_id)
    key, url = bearer(made["key"]), f"{live_server.base_url}/api/calls"
    assert requests.get(url, headers=key, timeout=5).status_code == 200
    revoked = requests.delete(f"{live_server.base_url}/api/businesses/{a.business_id}/api-keys/{made['id']}",
                              timeout=5)
    assert revoked.status_code == 204
    answer = requests.get(url, headers=key, timeout=5)
    assert answer.status_code == 401 and "error" in answer.json()
    listed = requests.get(f"{live_server.base_url}/api/businesses/{a.business_id}/api-keys", timeout=5).json()
    assert listed["api_keys"][0]["revoked"] is True and listed["api_keys"][0]["revoked_at"]
    fresh = make_key(live_server, a.business_id)["key"]
    for wrong in (fresh[:-2] + ("AA" if not fresh.endswith("AA") else "BB"), fresh[:11], "bk_" + "x" * 43,
                  "not-a-key"):
        assert requests.get(url, headers=bearer(wrong), timeout=5).status_code == 401, wrong
    # Presented, a credential must be right even where the loopback admin needs none.
    assert requests.get(url, headers={"Authorization": "Basic abc"}, timeout=5).status_code == 401
    assert requests.get(url, headers=bearer(fresh), timeout=5).status_code == 200


def test_with_an_admin_token_both_the_token_and_keys_work(make_live_server, settings):
    live = make_live_server(dataclasses.replace(settings, admin_api_token="admin-t"))
    a, b = add_tenant(live, 1), add_tenant(live, 2)
    admin = bearer("admin-t")
    key = bearer(make_key(live, a.business_id, admin)["key"])
    url = f"{live.base_url}/api/calls"
    assert requests.get(url, timeout=5).status_code == 401
    assert {c["call_sid"] for c in requests.get(url, headers=admin, timeout=5).json()["calls"]} == {
        a.call_sid, b.call_sid}
    assert [c["call_sid"] for c in requests.get(url, headers=key, timeout=5).json()["calls"]] == [a.call_sid]
    assert requests.post(f"{live.base_url}/api/businesses/{a.business_id}/api-keys", json={},
                         timeout=5).status_code == 401


def test_the_lookup_names_the_business_and_stamps_use_at_most_once_a_minute(live_server):
    """The function the console's sign-in calls."""
    a, b = add_tenant(live_server, 1), add_tenant(live_server, 2)
    raw_a, raw_b = make_key(live_server, a.business_id)["key"], make_key(live_server, b.business_id)["key"]
    with live_server.db.session() as session:
        assert business_id_for_key(session, raw_a) == a.business_id
        assert business_id_for_key(session, raw_b) == b.business_id
        assert business_id_for_key(session, raw_a + "x") is None
        assert business_id_for_key(session, "") is None
        first = as_utc(session.scalar(select(ApiKey.last_used_at).where(ApiKey.business_id == a.business_id)))
        assert first is not None
    with live_server.db.session() as session:
        assert business_id_for_key(session, raw_a) == a.business_id
        assert as_utc(session.scalar(select(ApiKey.last_used_at).where(ApiKey.business_id == a.business_id))) == first
        # A stamp older than a minute is renewed by the next use.
        session.execute(update(ApiKey).where(ApiKey.business_id == a.business_id)
                        .values(last_used_at=first - timedelta(minutes=2)))
        session.commit()
        assert business_id_for_key(session, raw_a) == a.business_id
        renewed = as_utc(session.scalar(select(ApiKey.last_used_at).where(ApiKey.business_id == a.business_id)))
        assert renewed > first - timedelta(minutes=2)
    shown = requests.get(f"{live_server.base_url}/api/businesses/{a.business_id}/api-keys", timeout=5).json()
    assert shown["api_keys"][0]["last_used_at"] is not None


def _every_stored_value(live) -> str:
    """Every value of every table, as text."""
    meta = MetaData()
    meta.reflect(live.db.engine)
    parts = []
    with live.db.engine.connect() as conn:
        for table in meta.sorted_tables:
            parts.extend(repr(tuple(row)) for row in conn.execute(table.select()))
    return "\n".join(parts)


def test_the_migration_builds_the_tables_the_models_describe(db):
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from services.store.models import Base

    with db.engine.connect() as conn:
        differences = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert [d for d in differences if "api_keys" in repr(d) or "audit_log" in repr(d)] == []
