"""A ready-made business so that a newcomer's first call is answered."""
from __future__ import annotations

from sqlalchemy.orm import Session

from services.store.call_records import business_for_number
from services.store.models import Business, PhoneNumber

DEMO_NAME = "מספרת הדגמה"
DEMO_PROMPT = (
    "{{business_name}} היא מספרה בתל אביב. שעות הפעילות: ראשון עד חמישי 09:00-19:00, שישי 08:00-14:00. "
    "שירותים: תספורת גברים 80 ש\"ח, תספורת נשים 150 ש\"ח, צבע החל מ-250 ש\"ח. "
    "עזרו ללקוחות לקבוע תור ולענות על שאלות על השירותים והמחירים."
)
DEMO_GREETING = "שלום, הגעתם למספרת הדגמה, איך אפשר לעזור?"


def create_demo_business(session: Session, number: str) -> tuple[Business, bool]:
    existing = business_for_number(session, number)
    if existing is not None:
        return existing, False
    business = Business(name=DEMO_NAME, business_prompt=DEMO_PROMPT, greeting=DEMO_GREETING,
                        outbound_greeting="שלום, מדברים ממספרת הדגמה.", voice="alloy")
    business.phone_numbers.append(PhoneNumber(e164=number))
    session.add(business)
    session.flush()
    return business, True
