"""Why a call ended, as stored in `calls.end_reason` (a `str` enum: rows hold the plain value)."""
from __future__ import annotations

from enum import StrEnum


class EndReason(StrEnum):
    # The caller, or the line.
    CALLER_HANGUP = "caller_hangup"  # Twilio's `stop`, or a completed status with no other reason
    CALLER_GOODBYE = "caller_goodbye"  # said goodbye; ended once the agent's answer was heard
    STREAM_CLOSED = "stream_closed"  # the media socket closed without a `stop`
    TWILIO_IDLE = "twilio_idle"  # no frame from Twilio for too long
    # The agent, or call control.
    AGENT_HANGUP = "agent_hangup"
    TRANSFER = "transfer"
    SILENCE = "silence"
    MAX_DURATION = "max_duration"
    ENDED_FROM_CONSOLE = "ended_from_console"  # End call on the console's live page; after a goodbye
    # Decided at the webhook, or for its stream.
    UNKNOWN_NUMBER = "unknown_number"
    LIMIT = "limit"
    VOICEMAIL = "voicemail"  # an answering machine (or a fax) answered; nothing was left on it
    VOICEMAIL_LEFT = "voicemail_left"  # an answering machine answered; the business's message was left
    NO_STREAM = "no_stream"  # the webhook was answered but its stream never started
    # The server.
    SHUTDOWN = "shutdown"  # the process stopped (a deploy) before the call was over
    # Twilio's final statuses for a call that never connected to us.
    BUSY = "busy"
    NO_ANSWER = "no-answer"
    FAILED = "failed"
    CANCELED = "canceled"
    # Our side failed.
    REALTIME_UNAVAILABLE = "realtime_unavailable"
    REALTIME_SESSION_TIMEOUT = "realtime_session_timeout"
    REALTIME_DROPPED = "realtime_dropped"
    SERVER_ERROR = "server_error"
    BUSINESS_NOT_FOUND = "business_not_found"
    PROCESS_LOST = "process_lost"  # the process carrying the call died; the sweeper ended its row


# Our side failed: the caller hears an apology rather than a plain hang-up, and a call without
# conversation is summarised as a failure, not as the caller leaving.
FAILURES = frozenset({
    EndReason.REALTIME_UNAVAILABLE, EndReason.REALTIME_SESSION_TIMEOUT, EndReason.REALTIME_DROPPED,
    EndReason.SERVER_ERROR, EndReason.BUSINESS_NOT_FOUND, EndReason.PROCESS_LOST,
})
