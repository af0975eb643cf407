"""Runs the model's function calls for one call.

The calls of a response run in their own greenlet (never on RX, TX or the Realtime greenlet:
some touch the database), each is answered with a `function_call_output`, and then one
follow-up response is requested through the gate. A tool that fails answers the model with an
error it can speak about; it never ends the call.
"""
from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass
from typing import Callable, Sequence

import gevent

from prompts.tools import call_event
from services import metrics
from services.store.call_records import set_transfer_to
from services.store.db import Database
from services import realtime_protocol as rt
from services.call_ending import CallEnding
from services.response_gate import RequestReason, ResponseGate
from services.store.end_reasons import EndReason
from services.tools.appointments import AppointmentBook
from services.tools.declarations import declarations
from services.tools.problem import ToolProblem

FOLLOW_UP = RequestReason.TOOL_RESULT  # the request that answers a tool's result
_FAILED = {"ok": False, "error": "tool_failed",
           "message": "this could not be done right now; apologise and offer that someone will call back"}


@dataclass(frozen=True)
class ToolContext:
    """What the tools know about their call."""

    db: Database
    business: object  # the call's Business, detached from its session
    call_sid: str
    caller_number: str


class CallTools:
    """One call's tools. `handle` is called by the Realtime greenlet; the rest runs in tool greenlets."""

    def __init__(self, context: ToolContext, *, send: Callable[[str], None], gate: ResponseGate,
                 ending: CallEnding, log: logging.LoggerAdapter):
        self._context = context
        self._send = send
        self._gate = gate
        self._ending = ending
        self._log = log
        self._declared = declarations(context.business)
        self._appointments = AppointmentBook(context.db, context.business, call_sid=context.call_sid,
                                             caller_number=context.caller_number, log=log)
        # Guards: _running. Written by the Realtime greenlet (spawn) and tool greenlets (done);
        # read by the silence watchdog and at the end of the call.
        self._lock = threading.Lock()
        self._running: set[gevent.Greenlet] = set()

    def declarations(self) -> list[rt.FunctionTool]:
        return list(self._declared)

    @property
    def busy(self) -> bool:
        with self._lock:
            return bool(self._running)

    def handle(self, response_id: str, calls: Sequence[rt.FunctionCall], spoke: bool) -> None:
        """The response asked for `calls`; `spoke`: it also had audio for the caller."""
        greenlet = gevent.spawn(self._run, response_id, tuple(calls), spoke)
        with self._lock:
            if not greenlet.dead:
                self._running.add(greenlet)

    def close(self) -> None:
        with self._lock:
            running, self._running = self._running, set()
        me = gevent.getcurrent()
        for greenlet in running:
            if greenlet is not me:
                greenlet.kill(block=False)

    def _run(self, response_id: str, calls: tuple[rt.FunctionCall, ...], spoke: bool) -> None:
        try:
            follow_up = False
            for call in calls:
                output, respond = self._execute(call, response_id, spoke)
                follow_up = follow_up or respond
                self._send(rt.function_call_output(call.call_id, json.dumps(output, ensure_ascii=False)))
            if follow_up:
                self._gate.request(FOLLOW_UP)
        except Exception:
            self._log.warning("tool results could not be sent", exc_info=True)
        finally:
            with self._lock:
                self._running.discard(gevent.getcurrent())

    def _execute(self, call: rt.FunctionCall, response_id: str, spoke: bool) -> tuple[dict, bool]:
        """The tool's output for the model, and whether the model should speak about it now."""
        log = self._log
        try:
            args = json.loads(call.arguments or "{}")
        except ValueError:
            args = None
        if not isinstance(args, dict):
            log.warning("tool arguments are not a JSON object", extra={"tool": call.name})
            return {"ok": False, "error": "bad_arguments", "message": "the arguments were not a JSON object"}, True
        args = {str(k): "" if v is None else str(v) for k, v in args.items()}
        if call.name not in {tool.name for tool in self._declared}:
            log.warning("call to a tool this call does not have", extra={"tool": call.name})
            return {"ok": False, "error": "unknown_tool",
                    "message": f"there is no tool {call.name!r} on this call"}, True
        log.info("tool call", extra={"tool": call.name})
        log.debug("tool arguments", extra={"tool": call.name, "arguments": json.dumps(args, ensure_ascii=False)[:300]})
        outcome = "ok"
        try:
            if call.name == "end_call":
                return self._end_call(args, response_id, spoke)
            if call.name == "transfer_call":
                return self._transfer_call(args, response_id, spoke)
            if call.name == "check_availability":
                return self._appointments.check_availability(args), True
            return self._appointments.schedule(args), True
        except ToolProblem as problem:
            outcome = "problem"
            log.info("tool answered with a problem", extra={"tool": call.name, "error": problem.code})
            return problem.result(), True
        except Exception:
            outcome = "failed"
            log.exception("tool failed", extra={"tool": call.name})
            return dict(_FAILED), True
        finally:
            metrics.TOOL_CALLS.labels(call.name, outcome).inc()

    def _end_call(self, args: dict, response_id: str, spoke: bool) -> tuple[dict, bool]:
        self._log.info("the agent ends the call")  # not its reason: a tool argument, the caller's words
        return self._begin_ending(EndReason.AGENT_HANGUP, "After end_call", response_id, spoke, cancellable=True)

    def _transfer_call(self, args: dict, response_id: str, spoke: bool) -> tuple[dict, bool]:
        number = getattr(self._context.business, "transfer_number", None)
        if not number:
            raise ToolProblem("no_transfer_number", "no one can take the call now; offer to take a message instead")
        with self._context.db.session() as session:
            set_transfer_to(session, self._context.call_sid, number)
        self._log.info("transfer to a person")  # not its reason: a tool argument
        return self._begin_ending(EndReason.TRANSFER, "After transfer_call", response_id, spoke, cancellable=False)

    def _begin_ending(self, reason: EndReason, event: str, response_id: str, spoke: bool, *,
                      cancellable: bool) -> tuple[dict, bool]:
        """End after what the caller hears next: this response's audio when it had some (the
        goodbye came with the call), else a follow-up response saying `event`."""
        if spoke:
            if self._ending.begin(reason, cancellable=cancellable, response_id=response_id):
                self._ending.response_done(response_id, tool_calls=False)
            return {"ok": True}, False
        notice = call_event(event)
        self._ending.begin(reason, cancellable=cancellable, awaiting=FOLLOW_UP, notice=notice)
        return {"ok": True, "next": notice}, True
