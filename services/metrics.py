"""Prometheus figures (`/metrics`).

They live in their own registry so that several apps in one test process share them
without double registration. Under gunicorn every worker also writes them to files in
`PROMETHEUS_MULTIPROC_DIR` (gunicorn.conf.py sets it up), and `/metrics` answers the sum
of every worker's, whichever worker takes the scrape.
"""
from __future__ import annotations

import os
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, multiprocess

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
REGISTRY = CollectorRegistry(auto_describe=True)

_LATENCY_BUCKETS = (0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)

GREETING_LATENCY = Histogram("call_greeting_latency_seconds", "Stream start to first agent frame sent",
                             buckets=_LATENCY_BUCKETS, registry=REGISTRY)
RESPONSE_LATENCY = Histogram("call_response_latency_seconds", "Caller speech stopped to first agent frame sent",
                             buckets=_LATENCY_BUCKETS, registry=REGISTRY)
BARGE_IN_LATENCY = Histogram("call_barge_in_latency_seconds",
                             "Caller speech started to the agent silenced (clear sent, or TX held)",
                             buckets=_LATENCY_BUCKETS, registry=REGISTRY)
BARGE_INS = Counter("call_barge_ins_total", "Caller speech over the agent, by what barge-in did: held it "
                    "(to decide), resumed it (a backchannel), cut it", ["action"], registry=REGISTRY)
RESUME_SILENCE = Histogram("call_barge_in_resume_silence_seconds",
                           "Silence the caller heard before the agent went on after a backchannel",
                           buckets=(0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 3.0), registry=REGISTRY)
FORWARDING_LATENCY = Histogram("call_forwarding_latency_seconds",
                               "First audio of an agent item read from Realtime to its first frame sent to Twilio",
                               buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1), registry=REGISTRY)
FRAMES = Counter("call_frames_total", "Media frames by direction", ["direction"], registry=REGISTRY)
FRAMES_DROPPED = Counter("call_frames_dropped_total", "Media frames dropped, by reason", ["reason"], registry=REGISTRY)
CALLS_ACTIVE = Gauge("calls_active", "Media streams open", multiprocess_mode="livesum", registry=REGISTRY)
CALLS_ENDED = Counter("calls_ended_total", "Calls ended, by end reason", ["end_reason"], registry=REGISTRY)
CALLS_REFUSED = Counter("calls_refused_total", "Calls refused at the webhook, by the limit they hit (or "
                        "`database`: it could not be reached in time)", ["limit"], registry=REGISTRY)
TOOL_CALLS = Counter("call_tool_calls_total", "Function calls the model made, by tool and outcome",
                     ["tool", "outcome"], registry=REGISTRY)  # outcome: ok | problem | failed
TOKENS = Counter("realtime_tokens_total", "Realtime tokens used, by kind", ["kind"], registry=REGISTRY)
COST = Counter("realtime_cost_usd_total", "Estimated Realtime cost in USD", registry=REGISTRY)
REALTIME_RECONNECTS = Counter("realtime_reconnects_total", "Realtime sessions lost mid-call, by outcome",
                              ["outcome"], registry=REGISTRY)
RESPONSE_STALLS = Counter("realtime_response_stalls_total", "Responses cancelled for showing no event",
                          registry=REGISTRY)
# The call journal (services/call_journal.py) through database trouble.
JOURNAL_QUEUE_DEPTH = Gauge("journal_queue_depth", "Call writes handed to the journal and not yet stored",
                            multiprocess_mode="livesum", registry=REGISTRY)
JOURNAL_RETRIES = Counter("journal_retries_total", "Journal transactions that failed on database trouble and "
                          "were retried", registry=REGISTRY)
JOURNAL_DROPPED = Counter("journal_dropped_total", "Call writes never stored, by reason", ["reason"],
                          registry=REGISTRY)  # reason: queue_full | failed | no_call_row
# Webhooks through database trouble (services/retried_writes.py).
WEBHOOK_WRITES = Counter("webhook_writes_retried_total", "Webhook writes kept for a retry after database trouble, "
                         "by outcome", ["outcome"], registry=REGISTRY)  # outcome: kept | stored | dropped
CALLS_SWEPT = Counter("calls_swept_total", "Calls of a lost process ended by the sweeper", registry=REGISTRY)


def exposition() -> bytes:
    """The figures in Prometheus text format: every worker's when they share a directory."""
    if not os.environ.get(MULTIPROC_ENV):
        return generate_latest(REGISTRY)
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    return generate_latest(registry)


def clear_worker_files(path: str) -> None:
    """Before the first worker starts: figures left by an earlier run must not be summed in."""
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob("*.db"):
        stale.unlink()


def worker_gone(pid: int) -> None:
    """A worker exited: its live gauges (calls_active) no longer count; its counters still do."""
    multiprocess.mark_process_dead(pid)
