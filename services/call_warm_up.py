"""The call path's first-use costs, paid once as a worker starts instead of by its first calls.

The first call after a start spent about 25 ms from `start` to asking for its greeting, the next
ones about 6: the first ORM load of a business, the first compile of the CRM statement, the
prompt templates read, the `openai` type adapters that validate `session.update` built. A burst
of calls right after a deploy paid them all at once, on the one event loop. This runs the same
functions on the first business (reads only; nothing is written or sent).
"""
from __future__ import annotations

import logging
from datetime import datetime, timezone

from sqlalchemy import select

from prompts import assemble_call_prompts
from services import realtime_protocol as rt
from services import realtime_settings
from services.crm_context import load_crm_facts
from services.scheduling import business_today
from services.settings import Settings
from services.store.db import Database
from services.store.models import Business
from services.tools.declarations import declarations

log = logging.getLogger("server")


def warm_up_call_path(db: Database, settings: Settings) -> int | None:
    """The id of the business the path was run for (None: there is none yet). Never raises:
    a failure here costs only the first calls' time."""
    try:
        with db.session() as session:
            business_id = session.scalar(select(Business.id).order_by(Business.id).limit(1))
            if business_id is None:
                load_crm_facts(session, 0, "+0")
                return None
        with db.session() as session:  # as a call loads it: by primary key, in a session of its own
            business = session.get(Business, business_id)
            session.expunge(business)
            facts = load_crm_facts(session, business_id, "+0")
        prompts = assemble_call_prompts(business, "inbound", facts, business_today(business, datetime.now(timezone.utc)))
        chosen = realtime_settings.of_business(business.realtime, settings, log)
        rt.session_update(realtime_settings.session_config(
            chosen, instructions=prompts.instructions, voice=business.voice,
            transcription_prompt=prompts.transcription_prompt, tools=declarations(business)))
        rt.response_create(prompts.greeting_instruction)
        return business_id
    except Exception:
        log.warning("call path warm-up failed; the first calls pay its costs", exc_info=True)
        return None
