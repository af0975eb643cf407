"""The stored world: businesses and their numbers, calls with their turns, leads.

Times are UTC. Schema changes go through Alembic (`server/migrations`).
"""
from __future__ import annotations

import secrets
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text as sql_text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def new_webhook_secret() -> str:
    return "whsec_" + secrets.token_hex(24)


def as_utc(value: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes; everything we store is UTC."""
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    return value


def iso(value: datetime | None) -> str | None:
    """A stored time as ISO-8601 UTC with a Z, as the API and webhooks show it."""
    value = as_utc(value)
    return None if value is None else value.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON}


# off: never cut (the caller's words are answered after the agent's); hold: hold the agent, then
# go on after a backchannel or cut; immediate: cut at the first sound of speech.
BARGE_IN_MODES = ("off", "hold", "immediate")


class Business(Base):
    __tablename__ = "businesses"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    voice: Mapped[str] = mapped_column(String(40), default="alloy")
    business_prompt: Mapped[str] = mapped_column(Text, default="")
    greeting: Mapped[str] = mapped_column(Text, default="")
    outbound_greeting: Mapped[str] = mapped_column(Text, default="")
    transfer_number: Mapped[str | None] = mapped_column(String(32))
    # On a deploy, live calls go to the transfer number (after a short notice) instead of a goodbye.
    transfer_on_shutdown: Mapped[bool] = mapped_column(Boolean, default=False)
    # "warm": the person hears a summary and presses 1 first; nobody accepting brings the caller
    # back to the agent (services/warm_transfer.py). "cold": the call is put straight through.
    transfer_mode: Mapped[str] = mapped_column(String(8), default="warm", server_default="warm")
    timezone: Mapped[str] = mapped_column(String(64), default="Asia/Jerusalem")
    working_hours: Mapped[dict[str, Any]] = mapped_column(default=dict)
    max_concurrent_calls: Mapped[int] = mapped_column(Integer, default=5)
    use_customer_name: Mapped[bool] = mapped_column(Boolean, default=True)
    # Said after the beep when an outbound call reaches an answering machine; empty: hang up.
    voicemail_message: Mapped[str] = mapped_column(Text, default="")
    appointment_minutes: Mapped[int] = mapped_column(Integer, default=30)  # one appointment slot
    # Where `call.completed` events go, and the HMAC key that signs them (services/post_call/webhook.py).
    webhook_url: Mapped[str | None] = mapped_column(String(500))
    webhook_secret: Mapped[str | None] = mapped_column(String(128), default=new_webhook_secret)
    # Dual-channel recording of every call, started when the stream starts.
    record_calls: Mapped[bool] = mapped_column(Boolean, default=True)
    # With recording on, the greeting ends with a short notice that the call is recorded.
    recording_notice: Mapped[bool] = mapped_column(Boolean, default=False)
    # The Realtime settings the business chose (services/realtime_settings.py); NULL, or a key
    # left out: the server's default.
    realtime: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # What the caller speaking over the agent does (services/barge_in.py): one of BARGE_IN_MODES.
    barge_in_mode: Mapped[str] = mapped_column(String(16), default="hold")
    # Words that, besides the defaults (services/backchannel.py), let the agent go on when said over it.
    backchannel_words: Mapped[list[Any]] = mapped_column(default=list)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)

    phone_numbers: Mapped[list["PhoneNumber"]] = relationship(
        back_populates="business", cascade="all, delete-orphan", order_by="PhoneNumber.id"
    )


class PhoneNumber(Base):
    """A number (E.164) that rings a business. A number belongs to one business."""

    __tablename__ = "phone_numbers"

    id: Mapped[int] = mapped_column(primary_key=True)
    business_id: Mapped[int] = mapped_column(ForeignKey("businesses.id", ondelete="CASCADE"), index=True)
    e164: Mapped[str] = mapped_column(String(32), unique=True)

    business: Mapped[Business] = relationship(back_populates="phone_numbers")


class Call(Base):
    __tablename__ = "calls"
    __table_args__ = (
        # Calls still waiting for their stream: the few rows admission looks through for lost
        # streams (services/call_limits.py); a row leaves it when its stream starts or it ends.
        Index("ix_calls_awaiting_stream", "stream_due_by",
              sqlite_where=sql_text("stream_sid IS NULL AND ended_at IS NULL"),
              postgresql_where=sql_text("stream_sid IS NULL AND ended_at IS NULL")),
        # A business's calls newest first (the console's history and its search), without a sort.
        Index("ix_calls_business_started", "business_id", "started_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    call_sid: Mapped[str] = mapped_column(String(64), unique=True)
    business_id: Mapped[int | None] = mapped_column(ForeignKey("businesses.id", ondelete="SET NULL"), index=True)
    direction: Mapped[str] = mapped_column(String(16), default="inbound")
    # Placed from the console's "Talk to your agent" (a browser, not Twilio): stored like any
    # call, left out of the overview's totals.
    is_test: Mapped[bool] = mapped_column(Boolean, default=False)
    from_number: Mapped[str] = mapped_column(String(32), default="")
    to_number: Mapped[str] = mapped_column(String(32), default="")
    status: Mapped[str] = mapped_column(String(24), default="ringing", index=True)
    stream_sid: Mapped[str | None] = mapped_column(String(64))
    # Set, once, by the first stream whose `start` shows this call's token (server/routes/media.py):
    # a second stream with the same token is refused, whichever worker or host it reaches.
    stream_claimed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # When the webhook answered with stream TwiML, plus the stream start timeout: a call whose
    # stream has not started by then (and a margin) is over, end reason `no_stream`.
    stream_due_by: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # "host:pid" of the worker whose websocket carried the stream: a call lives in one process.
    served_by: Mapped[str | None] = mapped_column(String(128))
    # The serving process's journal stamps its live calls' rows now and then (call_journal.HEARTBEAT_S);
    # a row with a stream, no end and an old stamp is a lost process's (services/call_sweeper.py).
    last_seen_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), index=True)
    # What the live call is doing (greeting | listening | speaking), written by its journal as it
    # changes, for the console's live page in any process (services/live_feed.py).
    live_state: Mapped[str | None] = mapped_column(String(16))
    # The console's End call: the process carrying the call sees it and ends it with a goodbye
    # (services/end_requests.py).
    end_requested_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)
    answered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    duration_s: Mapped[float | None] = mapped_column(Float)
    end_reason: Mapped[str | None] = mapped_column(String(40))
    # Figures the media path measured: latencies (ms), frame counts, drops by reason.
    metrics: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # Token usage summed over the call's responses, and its estimated cost.
    usage: Mapped[dict[str, Any]] = mapped_column(default=dict)
    cost_usd: Mapped[float | None] = mapped_column(Float)
    # The prompts the call was given: characters per layer and any warnings (e.g. a cut).
    prompt_info: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # Call control: the human the call was handed to and how that <Dial> ended; who answered an
    # outbound call as Twilio's answering machine detection saw it (human, machine_end_beep, ...).
    transfer_to: Mapped[str | None] = mapped_column(String(32))
    transfer_status: Mapped[str | None] = mapped_column(String(24))
    answered_by: Mapped[str | None] = mapped_column(String(32))
    # Outbound: when the agent's first words stopped waiting for that detection (services/voicemail.py);
    # a machine reported after it is the webhook's to handle.
    first_words_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # After the call (services/post_call): the caller's lead, a Hebrew summary, the extracted fields.
    lead_id: Mapped[int | None] = mapped_column(ForeignKey("leads.id", ondelete="SET NULL"), index=True)
    summary: Mapped[str | None] = mapped_column(Text)
    extraction: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # Twilio's recording, as /webhook/recording_status reports it.
    recording_sid: Mapped[str | None] = mapped_column(String(64))
    recording_status: Mapped[str | None] = mapped_column(String(24))
    recording_url: Mapped[str | None] = mapped_column(String(500))
    recording_duration_s: Mapped[float | None] = mapped_column(Float)
    # The recording transcribed per channel, when that worked: [{speaker, text, start_s}].
    recording_transcript: Mapped[list[Any] | None] = mapped_column(JSON)

    turns: Mapped[list["Turn"]] = relationship(
        back_populates="call", cascade="all, delete-orphan", order_by="Turn.started_at, Turn.id"
    )


class Turn(Base):
    __tablename__ = "turns"

    id: Mapped[int] = mapped_column(primary_key=True)
    call_id: Mapped[int] = mapped_column(ForeignKey("calls.id", ondelete="CASCADE"), index=True)
    speaker: Mapped[str] = mapped_column(String(16))  # caller | agent | dtmf (keypad digits pressed)
    text: Mapped[str] = mapped_column(Text, default="")
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    item_id: Mapped[str | None] = mapped_column(String(64))
    interrupted: Mapped[bool] = mapped_column(Boolean, default=False)
    # Agent turns: the caller's end of speech (for the greeting, the stream's start) to
    # the turn's first frame sent to Twilio, in ms.
    latency_ms: Mapped[float | None] = mapped_column(Float)
    # The journal's key for the write: a retried batch whose first try did land inserts nothing twice.
    write_key: Mapped[str | None] = mapped_column(String(32), unique=True, index=True)

    call: Mapped[Call] = relationship(back_populates="turns")


class Lead(Base):
    __tablename__ = "leads"
    __table_args__ = (UniqueConstraint("business_id", "phone"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    business_id: Mapped[int] = mapped_column(ForeignKey("businesses.id", ondelete="CASCADE"), index=True)
    phone: Mapped[str] = mapped_column(String(32))
    name: Mapped[str | None] = mapped_column(String(200))
    gender: Mapped[str | None] = mapped_column(String(16))  # male | female | None
    notes: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)
    # From the post-call extraction of the lead's latest call.
    city: Mapped[str | None] = mapped_column(String(100))
    last_call_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # The lead asked for a person no one could be found for (services/warm_transfer.py): call back.
    callback_requested_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    callback_call_sid: Mapped[str | None] = mapped_column(String(64))


class Job(Base):
    """Durable work after a call (services/post_call/jobs.py): claimed under a lease, retried with backoff.

    kind: `post_call` (summary, extraction, lead) or `webhook` (one event to the business).
    status: queued | running | done | failed.
    """

    __tablename__ = "jobs"
    __table_args__ = (Index("ix_jobs_claimable", "status", "run_after"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    call_id: Mapped[int] = mapped_column(ForeignKey("calls.id", ondelete="CASCADE"), index=True)
    payload: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16), default="queued")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    run_after: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    # Set by each claim; only the holder of the current token may finish the job.
    claim_token: Mapped[str | None] = mapped_column(String(32))
    claimed_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class WebhookDelivery(Base):
    """One attempt to POST an event to a business's webhook: a call's event (its job and call), or
    a test event sent from the business's settings (no job or call; `business_id` instead)."""

    __tablename__ = "webhook_deliveries"

    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    call_id: Mapped[int | None] = mapped_column(ForeignKey("calls.id", ondelete="CASCADE"), index=True)
    # Test events only: a call's deliveries reach their business through the call.
    business_id: Mapped[int | None] = mapped_column(ForeignKey("businesses.id", ondelete="CASCADE"), index=True)
    event_id: Mapped[str] = mapped_column(String(64))
    attempt: Mapped[int] = mapped_column(Integer)
    url: Mapped[str] = mapped_column(String(500))
    status_code: Mapped[int | None] = mapped_column(Integer)
    ok: Mapped[bool] = mapped_column(Boolean, default=False)
    error: Mapped[str | None] = mapped_column(Text)
    duration_ms: Mapped[float | None] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Appointment(Base):
    """A booked slot. One per business and start time: two calls cannot book the same slot."""

    __tablename__ = "appointments"
    __table_args__ = (UniqueConstraint("business_id", "starts_at", name="uq_appointments_business_start"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    business_id: Mapped[int] = mapped_column(ForeignKey("businesses.id", ondelete="CASCADE"), index=True)
    starts_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    ends_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    name: Mapped[str] = mapped_column(String(200))
    phone: Mapped[str] = mapped_column(String(32), index=True)
    note: Mapped[str] = mapped_column(Text, default="")
    call_sid: Mapped[str | None] = mapped_column(String(64))  # the call that booked it
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ApiKey(Base):
    """A business's key to the API (services/store/api_keys.py): it sees only that business.

    The key itself is never stored: `key_hash` is its SHA-256, `prefix` its first characters,
    public, to find the row and to tell keys apart in a list.
    """

    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(primary_key=True)
    business_id: Mapped[int] = mapped_column(ForeignKey("businesses.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(100), default="")
    prefix: Mapped[str] = mapped_column(String(16), index=True)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    # Stamped at most once a minute: a busy key does not write on every request.
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class AuditEntry(Base):
    """One change made through the API (services/store/audit.py): who, what, when, from where.

    No foreign keys: the trail outlives the business, key or object it names. `fields` holds the
    names of the fields changed, never their values.
    """

    __tablename__ = "audit_log"
    __table_args__ = (Index("ix_audit_log_business_id", "business_id", "id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)
    actor: Mapped[str] = mapped_column(String(16))  # admin | key
    api_key_id: Mapped[int | None] = mapped_column(Integer)
    # The business whose data changed (for a key, always the key's own).
    business_id: Mapped[int | None] = mapped_column(Integer)
    method: Mapped[str] = mapped_column(String(8))
    route: Mapped[str] = mapped_column(String(200))
    object_type: Mapped[str] = mapped_column(String(32))
    object_id: Mapped[str | None] = mapped_column(String(64))
    fields: Mapped[list[Any]] = mapped_column(default=list)
    status: Mapped[int] = mapped_column(Integer)
    client_addr: Mapped[str | None] = mapped_column(String(64))
