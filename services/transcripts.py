"""Turns as they will be stored: the agent's from its audio transcript, the caller's from
input transcription, each stamped with when it started."""
from __future__ import annotations

import threading
from dataclasses import dataclass, field

# The turns a new Realtime session is given after a reconnect: the latest, when a call is long.
MAX_REPLAYED_TURNS = 200


@dataclass(slots=True)
class AgentItem:
    item_id: str
    response_id: str
    started_at: float  # wall clock
    text: list[str] = field(default_factory=list)
    final_text: str | None = None
    heard_ms: int | None = None  # set when cut short: by barge-in, a lost line, the call's end
    audio_bytes: int = 0  # μ-law received for it so far (8 bytes a millisecond), with its transcript

    @property
    def transcript(self) -> str:
        return self.final_text if self.final_text is not None else "".join(self.text)

    @property
    def audio_ms(self) -> int:
        return self.audio_bytes // 8

    def heard_text(self) -> str:
        """The part the caller heard: the transcript received cut in proportion to the audio
        received that was heard, at a word boundary (the API does not say which words were heard)."""
        text = self.transcript.strip()
        if self.heard_ms is None or not self.audio_bytes:
            return text
        share = min(1.0, self.heard_ms / self.audio_ms)
        return cut_at_word(text, int(len(text) * share))


def cut_at_word(text: str, length: int) -> str:
    if length >= len(text):
        return text
    if length <= 0:
        return ""
    cut = text.rfind(" ", 0, length + 1)
    return text[:cut].rstrip() if cut > 0 else ""


class Transcripts:
    """The call's agent items (stored once heard to the end, or cut) and caller speech starts.

    The Realtime greenlet fills it; RX (an item heard to its end), barge-in (a cut item) and the
    end of the call take items out.
    """

    def __init__(self) -> None:
        # Guards: _agent, _caller_started, _said (and the items in _agent until taken out). Written
        # by the Realtime greenlet, RX, barge-in and `end`; never held while anything else is taken.
        self._lock = threading.Lock()
        self._agent: dict[str, AgentItem] = {}
        self._caller_started: dict[str, float] = {}
        self._said: list[tuple[str, str]] = []  # the latest MAX_REPLAYED_TURNS (a deque starts at 0.75 KB)

    def agent_item(self, response_id: str, item_id: str, at: float) -> None:
        with self._lock:
            self._agent.setdefault(item_id, AgentItem(item_id=item_id, response_id=response_id, started_at=at))

    def agent_delta(self, item_id: str, delta: str) -> None:
        with self._lock:
            item = self._agent.get(item_id)
            if item is not None:
                item.text.append(delta)

    def agent_audio(self, item_id: str, audio_bytes: int) -> None:
        with self._lock:
            item = self._agent.get(item_id)
            if item is not None:
                item.audio_bytes += audio_bytes

    def agent_done(self, item_id: str, transcript: str) -> None:
        with self._lock:
            item = self._agent.get(item_id)
            if item is not None:
                item.final_text = transcript

    def take(self, item_id: str) -> AgentItem | None:
        """The item, out of the table: whoever takes it stores it (once)."""
        with self._lock:
            return self._agent.pop(item_id, None)

    def take_cut(self, item_id: str, heard_ms: int) -> AgentItem | None:
        """The item, out of the table, cut where the caller stopped hearing it."""
        with self._lock:
            item = self._agent.pop(item_id, None)
        if item is not None:
            item.heard_ms = heard_ms
        return item

    def items_of(self, response_id: str) -> list[str]:
        with self._lock:
            return [item.item_id for item in self._agent.values() if item.response_id == response_id]

    def unfinished(self) -> list[AgentItem]:
        with self._lock:
            items = list(self._agent.values())
            self._agent.clear()
        return items

    def said(self, role: str, text: str) -> None:
        """A turn as stored ("user" or "assistant"; the agent's as heard): the conversation so far."""
        if text:
            with self._lock:
                self._said.append((role, text))
                if len(self._said) > MAX_REPLAYED_TURNS:
                    del self._said[0]

    def so_far(self) -> list[tuple[str, str]]:
        """The conversation so far, oldest first, for a new Realtime session to go on from."""
        with self._lock:
            return list(self._said)

    def caller_started(self, item_id: str, at: float) -> None:
        with self._lock:
            self._caller_started[item_id] = at

    def caller_started_at(self, item_id: str, default: float) -> float:
        with self._lock:
            return self._caller_started.pop(item_id, default)
