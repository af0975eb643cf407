"""A business created and its settings changed, one way for every door (the API, the console).

The fields come validated (server.api_schemas). What is checked here is what the model cannot
know: the numbers that ring a business belong to it alone, and only the admin decides them and
the business's share of the server's concurrent calls. The caller commits; a number taken by a
concurrent writer then shows as an IntegrityError, which the caller words as NUMBER_TAKEN.
"""
from __future__ import annotations

from typing import Any, Iterable

from sqlalchemy import select
from sqlalchemy.orm import Session

from services.store.models import Business, PhoneNumber, utcnow

NUMBER_TAKEN = "a phone number already belongs to another business"
ADMIN_FIELDS = frozenset({"phone_numbers", "max_concurrent_calls"})


class NumberTaken(Exception):
    """A number asked for rings another business."""

    def __init__(self, number: str, business_id: int):
        super().__init__(f"{number} already belongs to business {business_id}")
        self.number = number
        self.business_id = business_id


class AdminOnly(Exception):
    """A business (its own key) tried to set what only the admin sets."""

    def __init__(self, fields: Iterable[str]):
        self.fields = sorted(fields)
        super().__init__(f"only the admin sets {', '.join(self.fields)}")


def create(session: Session, fields: dict[str, Any]) -> Business:
    """A new business with `fields` (a BusinessCreate's), added to `session`; flush it for its id."""
    fields = dict(fields)
    numbers = fields.pop("phone_numbers", [])
    ensure_numbers_free(session, numbers, business_id=None)
    business = Business(**fields, phone_numbers=[PhoneNumber(e164=n) for n in numbers])
    session.add(business)
    return business


def update(session: Session, business: Business, fields: dict[str, Any], *, by_admin: bool) -> None:
    """Apply a BusinessPatch's fields to `business`. AdminOnly or NumberTaken before anything changes."""
    fields = dict(fields)
    refused = ADMIN_FIELDS.intersection(fields)
    if refused and not by_admin:
        raise AdminOnly(refused)
    if "phone_numbers" in fields:
        numbers = fields.pop("phone_numbers")
        ensure_numbers_free(session, numbers, business_id=business.id)
        # Keep the rows of numbers that stay, so their ids (and history) survive.
        kept = {p.e164: p for p in business.phone_numbers}
        business.phone_numbers = [kept.get(n) or PhoneNumber(e164=n) for n in numbers]
    for name, value in fields.items():
        setattr(business, name, value)
    business.updated_at = utcnow()  # also when only the numbers changed


def ensure_numbers_free(session: Session, numbers: list[str], business_id: int | None) -> None:
    """NumberTaken when one of `numbers` rings a business other than `business_id`."""
    if not numbers:
        return
    query = select(PhoneNumber).where(PhoneNumber.e164.in_(numbers))
    if business_id is not None:
        query = query.where(PhoneNumber.business_id != business_id)
    taken = session.scalars(query).first()
    if taken is not None:
        raise NumberTaken(taken.e164, taken.business_id)
