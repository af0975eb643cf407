"""Two businesses on one server, each with a call, a lead and an appointment, for the tests of
who sees what through the API (a business's key sees its own only)."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import requests

from services.store.models import Appointment, Call, Lead
from tests.conftest import LiveServer, add_business


@dataclass
class Tenant:
    business_id: int
    call_sid: str
    lead_id: int
    appointment_id: int
    number: str


def add_tenant(live: LiveServer, index: int) -> Tenant:
    number = f"+97230000010{index}"
    business_id = add_business(live, number=number, name=f"עסק {index}")
    call_sid = f"CA{index:032d}"
    with live.db.session() as session:
        now = datetime.now(timezone.utc)
        session.add(Call(call_sid=call_sid, business_id=business_id, from_number=f"+97250000000{index}",
                         to_number=number, status="completed", started_at=now - timedelta(minutes=5),
                         ended_at=now))
        lead = Lead(business_id=business_id, phone=f"+97250000000{index}", name=f"לקוח {index}")
        appointment = Appointment(business_id=business_id, starts_at=now + timedelta(days=1),
                                  ends_at=now + timedelta(days=1, minutes=30), name=f"לקוח {index}",
                                  phone=f"+97250000000{index}")
        session.add_all([lead, appointment])
        session.flush()
        return Tenant(business_id, call_sid, lead.id, appointment.id, number)


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def make_key(live: LiveServer, business_id: int, admin: dict[str, str] | None = None, name: str = "") -> dict:
    """A new key through the API, as the admin; the answer, with the raw key under "key"."""
    response = requests.post(f"{live.base_url}/api/businesses/{business_id}/api-keys", json={"name": name},
                             headers=admin or {}, timeout=5)
    assert response.status_code == 201, response.text
    return response.json()
