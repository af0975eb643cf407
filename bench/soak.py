"""A soak run: about N live calls for minutes, with faults, against the real server under gunicorn.

    python -m bench.soak [--calls 100] [--minutes 5] [--drop-share 0.05] [--db-pause-s 30] [--workers 2]
                         [--seed 1]

The processes of bench.calls: gunicorn (`gunicorn.conf.py`, gevent workers, loopback only), the
lean fake Realtime API, and the lean callers in this one. A call that ends is replaced, so about
`--calls` stay live; each runs turns (greeting, a question, the answer, now and then a barge-in)
for 30 to 100 s. Meanwhile:

- the fake cuts the Realtime connection (TCP reset) of `--drop-share` of the calls mid-response,
  and the server opens it again (README, "How a call runs");
- halfway through, another process holds `BEGIN EXCLUSIVE` on the SQLite file for `--db-pause-s`;
- 30 s before the end one worker gets SIGTERM, as in a deploy (SHUTDOWN_DRAIN_S=5,
  GRACEFUL_TIMEOUT=30). Its callers finish the turn under way and then listen, so the goodbye is
  heard to its end (talking over it would end the call at once: a shutdown is not called off).
  gunicorn starts a replacement worker, which takes new calls.

Then the live calls finish their turn and hang up. The report (a table, and JSON under
bench/results/) compares the stored rows, /metrics, the fake's and the callers' records and the
server's log. It stops by itself after minutes + 2 min at most, killing what it started.
"""
from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import calendar  # noqa: E402
import gc  # noqa: E402
import itertools  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import random  # noqa: E402
import re  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections import Counter  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402

import gevent  # noqa: E402
import requests  # noqa: E402
from sqlalchemy import func, select  # noqa: E402

from bench.calls import (BUSINESS_NUMBER, CLOCK_TICK_MS, ROOT, Run, cpu_ms, keep_server_log,  # noqa: E402
                         merged_histogram, percentile, playout_gaps, read_fake_stats, rss_kb, worker_pids)
from bench.lean_caller import LeanCall  # noqa: E402
from bench.loop_lag import LoopLag  # noqa: E402
from bench.twilio_peer import place_call  # noqa: E402
from prompts.tools import call_event  # noqa: E402
from services.call_figures import histogram_percentile  # noqa: E402
from services.store.db import Database  # noqa: E402
from services.store.models import Call, Turn, as_utc  # noqa: E402

DRAIN_S, GRACEFUL_TIMEOUT_S = 5, 30
SIGTERM_BEFORE_END_S = 30.0
BARGE_IN_SHARE = 0.25  # of the agent's answers
# The caller's words are a stored turn once VAD has heard 400 ms of silence after them and the
# transcript came back: speech that ended this soon before the call closed may not be one.
TURN_SETTLE_S = 1.0
PAIR_STEP_S = 0.040  # TX sends two 20 ms frames at a time
LOCK_SCRIPT = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], timeout=30, isolation_level=None)
conn.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
conn.execute("COMMIT")
print("released", flush=True)
"""
LOG_LINE = re.compile(r'level=(\w+) area=(\S+) call_sid=\S+ msg=("(?:[^"\\]|\\.)*"|\S+)')
GUNICORN_PREFIX = re.compile(r"^\[[^\]]*\] \[\d+\] ")


@dataclass(eq=False)
class SoakCall:
    index: int
    call_sid: str
    webhook: str = ""  # "ok", or how placing the call failed
    webhook_at: float = 0.0  # when it answered
    webhook_s: float = 0.0
    caller: LeanCall | None = None
    speech_ends: list[float] = field(default_factory=list)
    barge_ins: int = 0
    ended_by: str = ""  # "caller", "server <close code>", or what went wrong
    hangup_wait_s: float | None = None  # the caller's stop to the server's close


class Soak:
    def __init__(self, args, run: Run) -> None:
        self.args, self.run = args, run
        self.duration = args.minutes * 60
        self.life_s = (max(15.0, self.duration / 10), max(30.0, self.duration / 3))
        self.calls: list[SoakCall] = []
        self.numbers = itertools.count()
        self.live = 0
        self.draining: set[str] = set()  # call sids on the worker told to stop
        self.rss: dict[int, list[tuple[float, int]]] = {}
        self.born: dict[int, int] = {}  # each worker's start time: a pid is ours only while it matches
        # Each second: (t, live calls, journal queue depth, the machine's busy CPU ms, this run's CPU ms).
        self.samples: list[tuple[float, int, float | None, float, float]] = []
        self.cpu_seen: dict[int, float] = {}  # this run's processes' CPU ms, as last read
        self.cpu_start: dict[int, float] = {}  # each process's CPU ms as the calls begin
        self.marks: dict[str, float] = {}  # what happened when (monotonic; wall clock as *_wall)
        self.stopped: dict = {}
        self.metrics: dict[str, float] = {}
        self.greenlets: list[gevent.Greenlet] = []
        self.job_errors: list[str] = []  # the pause's or the SIGTERM's greenlet failed
        self.db = Database(run.db_url)

    # --- the run ----------------------------------------------------------------------

    def go(self, master: int) -> None:
        self.master = master
        self.t0, self.t0_wall = time.monotonic(), time.time()
        self.cpu_start = {pid: cpu_ms(pid) for pid in worker_pids(master)}
        self.load_end = self.t0 + self.duration
        ramp_s = self.args.calls / (10 * self.args.workers)
        jobs = [gevent.spawn(self.sample), gevent.spawn(self.pause_db), gevent.spawn(self.stop_a_worker)]
        slots = [gevent.spawn_later(k * ramp_s / self.args.calls, self.slot) for k in range(self.args.calls)]
        self.greenlets = jobs + slots
        gevent.joinall(slots)
        self.marks["load_end"], self.marks["calls_over"] = self.load_end, time.monotonic()
        gevent.joinall(jobs[1:], timeout=GRACEFUL_TIMEOUT_S + 15)
        self.job_errors = [f"{g.name}: {g.exception!r}" for g in jobs if g.exception is not None]
        self.settle()
        self.metrics = self.scrape()
        jobs[0].kill()

    def slot(self) -> None:
        while time.monotonic() < self.load_end:
            call = self.one_call(next(self.numbers))
            if call.caller is None:
                gevent.sleep(1.0)  # placing it failed: try again shortly

    def one_call(self, index: int) -> SoakCall:
        rng = random.Random(f"{self.args.seed}:{index}")
        call = SoakCall(index, f"CAsoak{index:028d}")
        self.calls.append(call)
        started = time.monotonic()
        try:
            # 30 s: during the pause the webhook's admission waits for the lock (15 s at most).
            placed = place_call(self.run.base_url, call.call_sid, f"+97250{index:07d}", BUSINESS_NUMBER, timeout=30)
            call.webhook = "ok" if placed.status_code == 200 and placed.stream_url else f"HTTP {placed.status_code}"
        except requests.RequestException as exc:
            call.webhook = type(exc).__name__
        call.webhook_at = time.monotonic()
        call.webhook_s = call.webhook_at - started
        if call.webhook != "ok":
            return call
        try:
            caller = call.caller = LeanCall(f"ws://127.0.0.1:{self.run.port}/ws/twilio-media", call.call_sid,
                                            placed.parameters, ticker=self.run.ticker).start()
        except Exception as exc:  # noqa: BLE001 - counted, not fatal
            call.ended_by = f"could not start: {exc!r}"
            return call
        self.live += 1
        try:
            self.converse(call, caller, rng, min(started + rng.uniform(*self.life_s), self.load_end))
            call.ended_by = "caller"
        except Exception as exc:  # noqa: BLE001 - a wait that failed: counted, the slot goes on
            call.ended_by = f"server {caller.close_code}" if caller.closed_by_server else repr(exc)[:300]
        finally:
            stop_at = time.monotonic()
            caller.stop(timeout=12)  # during the pause a call's close waits 10 s for its writes
            if call.ended_by == "caller" and caller.closed_at:
                call.hangup_wait_s = caller.closed_at - stop_at
            self.live -= 1
        return call

    def converse(self, call: SoakCall, caller: LeanCall, rng: random.Random, end: float) -> None:
        caller.wait_heard(1400, timeout=15)  # the greeting
        while True:
            caller.wait_quiet(100, timeout=20)
            if call.call_sid in self.draining:
                deadline = time.monotonic() + DRAIN_S + 25
                while not caller.closed and time.monotonic() < deadline:
                    gevent.sleep(0.2)
                raise AssertionError("a call on the stopping worker was not closed by it after its goodbye")
            if time.monotonic() > end - 4:
                return
            self.speak(call, caller)
            if rng.random() < BARGE_IN_SHARE:
                clears = len(caller.clears)
                caller.wait_heard(caller.heard_ms + 1500, timeout=15)  # into the answer
                self.speak(call, caller)
                call.barge_ins += 1
                caller.wait_clear(clears + 1, timeout=10)
            caller.wait_heard(caller.heard_ms + 2400, timeout=15)  # the answer (2500 ms)

    @staticmethod
    def speak(call: SoakCall, caller: LeanCall, ms: int = 600) -> None:
        caller.speak(ms)
        call.speech_ends.append(time.monotonic() + ms / 1000)

    def sample(self) -> None:
        for k in itertools.count():
            now = time.monotonic()
            workers = worker_pids(self.master)
            for pid in workers:
                try:
                    self.rss.setdefault(pid, []).append((now, rss_kb(pid)))
                    self.born.setdefault(pid, born(pid))
                except OSError:
                    pass
            for pid in [*workers, self.master, self.run.fake.pid, os.getpid()]:
                try:
                    self.cpu_seen[pid] = cpu_ms(pid)
                    self.cpu_start.setdefault(pid, self.cpu_seen[pid])  # a replacement: from its first sample
                except OSError:
                    pass
            depth = self.scrape().get("journal_queue_depth") if k % 2 == 0 else None
            self.samples.append((now, self.live, depth, machine_busy_ms(), sum(self.cpu_seen.values())))
            gevent.sleep(1.0)

    def scrape(self) -> dict[str, float]:
        """/metrics, summed by name with labels ({} if it does not answer)."""
        try:
            text = requests.get(f"{self.run.base_url}/metrics", timeout=3).text
        except requests.RequestException:
            return {}
        out: dict[str, float] = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                out[name] = float(value)
                if "{" in name:  # and the sum over the labels
                    base = name.split("{")[0]
                    out[base] = out.get(base, 0.0) + float(value)
        return out

    def pause_db(self) -> None:
        if self.args.db_pause_s <= 0:
            return
        gevent.sleep(max(0.0, self.t0 + self.duration / 2 - self.args.db_pause_s / 2 - time.monotonic()))
        lock = subprocess.Popen([sys.executable, "-c", LOCK_SCRIPT, str(self.run.tmp / "bench.db"),
                                 str(self.args.db_pause_s)], stdout=subprocess.PIPE, text=True)
        self.run.procs.append(lock)  # killed with the rest on any failure
        for mark in ("pause_start", "pause_end"):  # the script says "locked", then "released"
            if lock.stdout.readline().strip():
                self.marks[mark], self.marks[mark + "_wall"] = time.monotonic(), time.time()
        lock.wait()

    def stop_a_worker(self) -> None:
        gevent.sleep(max(0.0, self.load_end - min(SIGTERM_BEFORE_END_S, self.duration / 4) - time.monotonic()))
        with self.db.session() as session:
            live = dict(session.execute(select(Call.call_sid, Call.served_by).where(
                Call.end_reason.is_(None), Call.served_by.is_not(None))).all())
        on = Counter(int(served.rsplit(":", 1)[1]) for served in live.values())
        pids = worker_pids(self.master)
        if not pids:
            raise RuntimeError("gunicorn has no worker left to stop")
        pid = max(pids, key=lambda p: on.get(p, 0))  # the one carrying more calls
        self.draining = {sid for sid, served in live.items() if served.endswith(f":{pid}")}
        os.kill(pid, signal.SIGTERM)
        self.marks["sigterm"], self.marks["sigterm_wall"] = time.monotonic(), time.time()
        self.stopped = {"pid": pid, "live_calls": len(self.draining)}
        while pid in worker_pids(self.master) and time.monotonic() < self.marks["sigterm"] + GRACEFUL_TIMEOUT_S + 5:
            gevent.sleep(0.2)
        self.marks["worker_exited"] = time.monotonic()
        while len(worker_pids(self.master)) < self.args.workers and time.monotonic() < self.marks["sigterm"] + 60:
            gevent.sleep(0.2)
        new = set(worker_pids(self.master)) - set(pids)
        if new:
            self.stopped["replacement_pid"] = new.pop()
            self.marks["replacement_up"] = time.monotonic()

    def pause(self) -> tuple[tuple[float, float] | None, tuple[float, float] | None]:
        """The database pause as it happened: (monotonic, wall clock), or (None, None)."""
        if "pause_end" not in self.marks:
            return None, None
        m = self.marks
        return (m["pause_start"], m["pause_end"]), (m["pause_start_wall"], m["pause_end_wall"])

    def settle(self, timeout: float = 20.0) -> None:
        """Until every started stream's row has its end (the journal writes it after the close)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.db.session() as session:
                if not session.scalar(select(func.count()).select_from(Call).where(
                        Call.stream_sid.is_not(None), Call.end_reason.is_(None))):
                    return
            gevent.sleep(0.5)


def machine_busy_ms() -> float:
    """The CPU time all cores have spent busy since boot, whatever ran."""
    user, nice, system, idle, iowait, irq, softirq, steal = (
        int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9])
    return (user + nice + system + irq + softirq + steal) * CLOCK_TICK_MS


def born(pid: int) -> int:
    """The process's start time (clock ticks since boot): tells it from a later one with its pid."""
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])


# --- figures ----------------------------------------------------------------------------


def p(values: list[float]) -> dict:
    return {"p50": percentile(values, 50), "p99": percentile(values, 99), "max": max(values, default=None),
            "n": len(values)}


def arrival_delays(callers: list[LeanCall]) -> list[tuple[float, float]]:
    """(when, ms) each agent frame came later than one TX step (a pair of frames) after the one
    before it: how late TX ran, as the caller sees it (the callers' own loop lag included)."""
    out = []
    for caller in callers:
        for times in caller.arrival_runs():
            out += [(t, max(0.0, (t - prev - PAIR_STEP_S) * 1000)) for prev, t in zip(times, times[1:])]
    return out


def server_problems(log_text: str, pause: tuple[float, float] | None) -> tuple[dict, dict]:
    """The server log's errors and exceptions, by area and message, with how many came in the
    pause; and its warnings, counted the same way."""
    groups: dict[str, dict] = {}
    warnings: Counter = Counter()
    for line in log_text.splitlines():
        m = LOG_LINE.search(line)
        if m and m.group(1) == "WARNING":
            warnings[f"{m.group(2)}: {m.group(3).strip(chr(34))}"] += 1
        if m and m.group(1) in ("ERROR", "CRITICAL"):
            key = f"{m.group(1)} {m.group(2)}: {m.group(3).strip(chr(34))}"
        elif not m and any(s in line for s in ("Traceback", "[ERROR]", "[CRITICAL]", "failed with")):
            key = GUNICORN_PREFIX.sub("", line.strip())[:160]
        else:
            continue
        group = groups.setdefault(key, {"count": 0, "in_pause": 0, "exception": "exc=" in line})
        group["count"] += 1
        ts = re.search(r"ts=(\S+?)\.(\d{3})Z", line)
        if pause and ts:
            at = calendar.timegm(time.strptime(ts.group(1), "%Y-%m-%dT%H:%M:%S")) + int(ts.group(2)) / 1000
            group["in_pause"] += pause[0] <= at <= pause[1] + 1
    return groups, dict(warnings.most_common())


def turn_figures(started: list[SoakCall], by_sid: dict, turn_counts: Counter, conns: list[dict]) -> dict:
    """Per call: caller turns spoken (and heard by the fake's VAD) against stored; agent responses
    the fake streamed, agent items the caller got audio of, and agent turns stored."""
    by_item = {r["item_id"]: i for i, c in enumerate(conns) for r in c["responses"]}
    totals, mismatches = Counter(), []
    for call in started:
        caller, row = call.caller, by_sid.get(call.call_sid)
        closed = caller.closed_at or time.monotonic()
        spoken = sum(1 for end in call.speech_ends if end <= closed - TURN_SETTLE_S)
        heard = sum(1 for s in caller.segments if s.received_ms > 0)
        mine = {by_item[n[5:]] for _, n in caller.marks_received if n[5:] in by_item}  # "item:<id>"
        streamed = sum(1 for i in mine for r in conns[i]["responses"] if r["audio_ms_sent"] > 0)
        stored_caller = turn_counts[(row.id, "caller")] if row else 0
        stored_agent = turn_counts[(row.id, "agent")] if row else 0
        totals.update(caller_spoken=spoken, caller_cut_by_end=len(call.speech_ends) - spoken,
                      caller_heard_by_fake=sum(len(conns[i]["speech_stopped"]) for i in mine),
                      caller_stored=stored_caller, agent_streamed=streamed, agent_heard=heard,
                      agent_stored=stored_agent)
        if stored_caller != spoken or stored_agent != heard:
            mismatches.append({"call_sid": call.call_sid, "caller_spoken": spoken, "caller_stored": stored_caller,
                               "agent_heard": heard, "agent_streamed": streamed, "agent_stored": stored_agent,
                               "end_reason": row.end_reason if row else None, "ended_by": call.ended_by})
    return dict(totals) | {"calls_mismatched": len(mismatches), "mismatches": mismatches[:30]}


def audio_window(soak: Soak, callers: list[LeanCall], stored: list, conns: list[dict], inside: bool) -> dict:
    """Audio during the pause (`inside`) or outside it: the callers' arrival delays and playout
    gaps, the fake's time from the caller's end of speech to the server's response.create, and
    the server's own TX lateness over the calls live during the pause (or the others)."""
    pause, pause_wall = soak.pause()

    def here(t: float) -> bool:
        return (pause is not None and pause[0] <= t <= pause[1]) == inside

    answers = []
    for c in conns:
        created = [r["created_at"] for r in c["responses"]]
        for before, at in zip([0.0] + created, created):
            stops = [s for s in c["speech_stopped"] if before <= s <= at]
            if stops and here(at):
                answers.append((at - stops[-1]) * 1000)
    delays = [ms for t, ms in arrival_delays(callers) if here(t)]
    gaps = [(round(t - soak.t0, 1), round(ms, 1)) for t, ms in playout_gaps(callers) if here(t)]
    during = {r.call_sid for r in stored if pause_wall and r.answered_at and r.ended_at
              and as_utc(r.answered_at).timestamp() <= pause_wall[1]
              and as_utc(r.ended_at).timestamp() >= pause_wall[0]}
    tx_rows = [(r.call_sid, r.end_reason, r.metrics or {}) for r in stored if (r.call_sid in during) == inside]
    return {"arrival_delay_ms": p(delays), "playout_gaps": len(gaps),
            "playout_gaps_5ms": sum(1 for _, ms in gaps if ms >= 5), "playout_gap_ms": p([ms for _, ms in gaps]),
            "playout_gaps_at_s_ms": sorted(gaps)[:50],
            "answer_start_ms": p(answers), "server_tx_calls": len(tx_rows),
            "server_tx_lateness_p99_ms": histogram_percentile(merged_histogram(tx_rows, "tx_lateness_ms"), 99)}


def timeline(soak: Soak, callers: list[LeanCall], step_s: float = 10.0) -> list[dict]:
    """Every `step_s`: live calls, agent frames received and those 20 ms or more late, playout
    gaps, the journal's queue, the workers' RSS, and CPU in cores: the machine's (anything
    running on it) and this run's processes' (gunicorn, the fake, the callers)."""
    def bin_of(t: float) -> int:
        return int((t - soak.t0) // step_s)

    delays = arrival_delays(callers)
    frames, late = Counter(bin_of(t) for t, _ in delays), Counter(bin_of(t) for t, ms in delays if ms >= 20)
    gaps = Counter(bin_of(t) for t, _ in playout_gaps(callers))
    last = {}  # each bin's last sample
    for sample in soak.samples:
        last[bin_of(sample[0])] = sample
    rows, before = [], soak.samples[0] if soak.samples else None
    for k, (t, live, _, busy, ours) in sorted(last.items()):
        dt = (t - before[0]) * 1000 or 1.0
        depths = [s[2] for s in soak.samples if bin_of(s[0]) == k and s[2] is not None]
        rows.append({"t": round(k * step_s), "live": live, "frames": frames[k], "late_20ms": late[k], "gaps": gaps[k],
                     "journal_queue": max(depths, default=None),
                     "machine_cores": round((busy - before[3]) / dt, 2), "run_cores": round((ours - before[4]) / dt, 2),
                     "rss_mb": {str(pid): round([kb for ts, kb in series if ts <= t][-1] / 1024, 1)
                                for pid, series in soak.rss.items() if series[0][0] <= t and series[-1][0] >= t - 2}})
        before = last[k]
    return rows


def memory_figures(soak: Soak, stored: list) -> dict:
    """Each worker's RSS from its first sample (before any call) to its last (the stopped one's:
    before the SIGTERM), over the calls it carried; and at steady load, over the calls that started
    between the first minute (or 10 s after the pause: what the journal held meanwhile stays in
    the heap) and the SIGTERM, with about as many calls live at both ends."""
    def wall(t: float) -> float:
        return soak.t0_wall + (t - soak.t0)

    pids = [(int(r.served_by.rsplit(":", 1)[1]), as_utc(r.answered_at)) for r in stored if r.served_by]
    steady_end = soak.marks.get("sigterm", soak.load_end)
    warm = soak.t0 + min(60.0, soak.duration / 4)
    if soak.marks.get("pause_end", steady_end) + 40 < steady_end:
        warm = max(warm, soak.marks["pause_end"] + 10)
    out = {}
    for pid, samples in soak.rss.items():
        original = samples[0][0] < soak.t0 + 1  # not the replacement, sampled from its boot
        end_kb = ([kb for t, kb in samples if t < steady_end][-1] if pid == soak.stopped.get("pid")
                  else samples[-1][1])
        steady = [kb for t, kb in samples if warm <= t <= steady_end]
        calls = sum(1 for p_, _ in pids if p_ == pid)
        between = sum(1 for p_, at in pids if p_ == pid and at and wall(warm) <= at.timestamp() <= wall(steady_end))
        out[str(pid)] = {"calls": calls, "rss_start_kb": samples[0][1], "rss_end_kb": end_kb,
                         "kb_per_call": round((end_kb - samples[0][1]) / calls, 1) if original and calls else None,
                         "steady_calls": between,
                         "steady_kb_per_call": round((steady[-1] - steady[0]) / between, 1)
                         if original and steady and between else None}
    return out


def figures(soak: Soak, fake: dict, log_text: str, bench_lag: dict) -> dict:
    with soak.db.session() as session:
        rows = session.execute(select(Call.id, Call.call_sid, Call.served_by, Call.end_reason, Call.metrics,
                                      Call.stream_sid, Call.answered_at, Call.ended_at)).all()
        turn_counts = Counter({(cid, who): n for cid, who, n in session.execute(
            select(Turn.call_id, Turn.speaker, func.count()).group_by(Turn.call_id, Turn.speaker))})
    m, metrics, conns = soak.marks, soak.metrics, fake.get("connections", [])
    by_sid = {r.call_sid: r for r in rows}
    stored = [r for r in rows if r.stream_sid]
    started = [c for c in soak.calls if c.caller is not None]
    callers = [c.caller for c in started]
    pause, pause_wall = soak.pause()

    def in_pause(t: float, after_s: float = 0.0) -> bool:
        return pause is not None and pause[0] <= t <= pause[1] + after_s

    def row_figure(key: str) -> list:
        return [(r.metrics or {}).get(key) for r in stored]

    dropped = Counter()
    for frames in row_figure("frames_dropped"):
        dropped.update(frames or {})
    stopped_pid = soak.stopped.get("pid")
    # A goodbye heard: the response to the server's shutdown notice, played to its mark.
    shutdown_notice = call_event("Shutdown")[:80]
    goodbye_items = {"item:" + r["item_id"] for c in conns for r in c["responses"] if r["notice"] == shutdown_notice}
    goodbyes = sum(1 for c in started if c.call_sid in soak.draining and c.ended_by == "server 1000"
                   and goodbye_items & {n for _, n in c.caller.marks_echoed})
    carried = Counter(r.served_by.rsplit(":", 1)[1] for r in stored if r.served_by)
    live = [s[1] for s in soak.samples if soak.t0 + 20 < s[0] < m.get("sigterm", soak.load_end)]
    log_errors, log_warnings = server_problems(log_text, pause_wall)
    # Expected ends: the caller hung up; the stopping worker closed it after its goodbye (1000) or
    # turned away a stream that reached it as it stopped (1001).
    caller_errors = [f"{c.call_sid}: {c.ended_by} (stored {getattr(by_sid.get(c.call_sid), 'end_reason', None)})"
                     for c in started if c.ended_by not in ("caller", "server 1001")
                     and not (c.ended_by == "server 1000" and c.call_sid in soak.draining)]
    caller_errors += [f"{c.call_sid}: {e}" for c in started
                      for e in c.caller.protocol_errors + c.caller.greenlet_errors]
    hangups = [c for c in started if c.hangup_wait_s is not None]
    return {
        "config": {k: getattr(soak.args, k)
                   for k in ("calls", "minutes", "drop_share", "db_pause_s", "workers", "seed")}
        | {"shutdown_drain_s": DRAIN_S, "graceful_timeout_s": GRACEFUL_TIMEOUT_S},
        "timeline_s": {k: round(v - soak.t0, 1) for k, v in m.items() if not k.endswith("_wall")},
        "live_calls": {"min": min(live, default=None), "p50": percentile(live, 50), "max": max(live, default=None),
                       "min_in_pause": min((s[1] for s in soak.samples if in_pause(s[0])), default=None)},
        "calls": {"placed": len(soak.calls), "webhook": dict(Counter(c.webhook for c in soak.calls)),
                  "webhook_failed_in_pause": sum(1 for c in soak.calls
                                                 if c.webhook != "ok" and in_pause(c.webhook_at, 16)),
                  "webhook_s": p([c.webhook_s for c in soak.calls]),
                  "webhook_s_answered_in_pause": p([c.webhook_s for c in soak.calls if in_pause(c.webhook_at, 1)]),
                  # A stream turned away by the stopping worker has a row with an end and no stream.
                  "streams_started": len(started), "rows_with_stream": len(stored),
                  "not_ended": sum(1 for r in stored if r.end_reason is None),
                  "by_end_reason": dict(Counter(getattr(by_sid.get(c.call_sid), "end_reason", None) or "none"
                                                for c in started)),
                  "started_not_stored": sum(1 for c in started
                                            if not getattr(by_sid.get(c.call_sid), "end_reason", None))},
        "server_cpu_ms_per_call_second": round(sum(
            ms - soak.cpu_start.get(pid, 0.0) for pid, ms in soak.cpu_seen.items() if pid in soak.rss) / max(
            1.0, sum((c.caller.closed_at or c.caller.started_at) - c.caller.started_at for c in started)), 2),
        "reconnects": {"cuts_injected": sum(1 for c in conns if c["dropped_at"]),
                       "resumed_connections": sum(1 for c in conns if c["resumed"]),
                       "calls_reconnected": sum(1 for n in row_figure("realtime_reconnects") if n),
                       "reconnects": sum(n or 0 for n in row_figure("realtime_reconnects")),
                       "gap_ms": p([g for gaps in row_figure("reconnect_gap_ms") for g in gaps or []]),
                       "response_stalls": sum(n or 0 for n in row_figure("response_stalls")),
                       "metrics": {k: v for k, v in metrics.items() if k.startswith("realtime_")}},
        "turns": turn_figures(started, by_sid, turn_counts, conns),
        "barge_ins": sum(c.barge_ins for c in started),
        "frames_dropped": dict(dropped),
        # Clearing queued audio on barge-in is the point of barge-in, not a loss.
        "frames_dropped_unintended": {k: v for k, v in dropped.items() if k not in ("barge_in", "cancelled_response")},
        "memory": memory_figures(soak, stored),
        "journal": {"retries": metrics.get("journal_retries_total", 0.0),
                    "dropped": {k: v for k, v in metrics.items() if k.startswith("journal_dropped_total{")},
                    "queue_depth_peak": max((s[2] for s in soak.samples if s[2] is not None), default=None)},
        "timeline": timeline(soak, callers),
        "audio_during_pause": audio_window(soak, callers, stored, conns, True),
        "audio_outside_pause": audio_window(soak, callers, stored, conns, False),
        # A call's close waits (10 s at most) for its writes to be stored.
        "hangup_wait_s": {"in_pause": p([c.hangup_wait_s for c in hangups if in_pause(c.caller.closed_at, 11)]),
                          "all": p([c.hangup_wait_s for c in hangups])},
        "shutdown": soak.stopped | {
            "stored_shutdown": sum(1 for r in stored if r.end_reason == "shutdown"
                                   and (r.served_by or "").endswith(f":{stopped_pid}")),
            "exited_after_s": round(m["worker_exited"] - m["sigterm"], 1) if "worker_exited" in m else None,
            "goodbye_heard": goodbyes, "turned_away_1001": sum(1 for c in started if c.ended_by == "server 1001"),
            "replacement_calls": carried.get(str(soak.stopped.get("replacement_pid")), 0)},
        "load": {"bench_loop_lag_ms": bench_lag, "fake_loop_lag_ms": fake.get("loop_lag_ms")},
        "server_log_warnings": log_warnings,
        "errors": {"server_log": log_errors, "callers": caller_errors, "soak": soak.job_errors,
                   "fake": [f"connection {i}: {c['invalid_events']} invalid, {c['double_responses']} double"
                            for i, c in enumerate(conns) if c["invalid_events"] or c["double_responses"]]},
    }


def print_table(r: dict) -> None:
    def fmt(v):
        return "-" if v is None else f"{v:.1f}" if isinstance(v, float) else str(v)

    def pp(d):
        return f"p50 {fmt(d['p50'])} / p99 {fmt(d['p99'])} / max {fmt(d['max'])} (n={d['n']})"

    c, rc, t, sd, j = r["calls"], r["reconnects"], r["turns"], r["shutdown"], r["journal"]
    rows = [
        ("run", " ".join(f"{k}={v}" for k, v in r["config"].items())),
        ("timeline, s", " ".join(f"{k}={v}" for k, v in r["timeline_s"].items())),
        ("live calls (steady)", f"min {r['live_calls']['min']}, p50 {r['live_calls']['p50']}, "
                                f"max {r['live_calls']['max']}; min in the pause {r['live_calls']['min_in_pause']}"),
        ("calls placed / webhook", f"{c['placed']}: {c['webhook']} "
                                   f"({c['webhook_failed_in_pause']} failed in the pause)"),
        ("webhook answered, s", pp(c["webhook_s"])),
        ("  answered in or just after pause", pp(c["webhook_s_answered_in_pause"])),
        ("streams started / rows", f"{c['streams_started']} / {c['rows_with_stream']}, not ended {c['not_ended']}, "
                                   f"not stored {c['started_not_stored']}"),
        ("completed by end reason", str(c["by_end_reason"])),
        ("server CPU ms per call-second", fmt(r["server_cpu_ms_per_call_second"])),
        ("Realtime cuts / reconnects", f"{rc['cuts_injected']} cut, {rc['calls_reconnected']} calls reconnected "
                                       f"({rc['reconnects']}), stalls {rc['response_stalls']}"),
        ("reconnect gap, ms", pp(rc["gap_ms"])),
        ("caller turns spoken / stored", f"{t.get('caller_spoken', 0)} / {t.get('caller_stored', 0)} "
                                         f"(VAD turns at the fake {t.get('caller_heard_by_fake', 0)}, "
                                         f"cut by the call's end {t.get('caller_cut_by_end', 0)})"),
        ("agent: streamed / heard / stored", f"{t.get('agent_streamed', 0)} / {t.get('agent_heard', 0)} / "
                                             f"{t.get('agent_stored', 0)} ({t['calls_mismatched']} calls differ)"),
        ("barge-ins", str(r["barge_ins"])),
        ("frames dropped (unintended)", f"{sum(r['frames_dropped_unintended'].values())} "
                                        f"{r['frames_dropped_unintended']}"),
        ("journal retries / dropped", f"{fmt(j['retries'])} / {j['dropped'] or 0}, "
                                      f"queue peak {fmt(j['queue_depth_peak'])}"),
    ]
    for pid, w in r["memory"].items():
        rows.append((f"worker {pid} RSS", f"{w['rss_start_kb']} -> {w['rss_end_kb']} KB over {w['calls']} calls: "
                                          f"{fmt(w['kb_per_call'])} KB/call; steady {fmt(w['steady_kb_per_call'])} "
                                          f"KB/call over {w['steady_calls']}"))
    for name in ("audio_during_pause", "audio_outside_pause"):
        a = r[name]
        rows += [(f"{name.replace('_', ' ')}: arrival delay ms", pp(a["arrival_delay_ms"])),
                 ("  playout gaps: all, 5 ms or more", f"{a['playout_gaps']}, {a['playout_gaps_5ms']}: "
                                                       + pp(a["playout_gap_ms"])),
                 ("  answer start ms", pp(a["answer_start_ms"])),
                 ("  server TX lateness p99 ms", f"{fmt(a['server_tx_lateness_p99_ms'])} "
                                                 f"over {a['server_tx_calls']} calls")]
    rows += [("hang-up answered, s (in pause)", pp(r["hangup_wait_s"]["in_pause"])),
             ("SIGTERM worker", f"pid {sd.get('pid')}: {sd.get('live_calls')} live, exited after "
                                f"{sd['exited_after_s']} s, {sd['stored_shutdown']} stored shutdown, "
                                f"{sd['goodbye_heard']} heard the goodbye, {sd['turned_away_1001']} turned away; "
                                f"replacement {sd.get('replacement_pid')} took {sd['replacement_calls']} calls"),
             ("loop lag p99 ms (callers, fake)", f"{fmt(r['load']['bench_loop_lag_ms']['p99'])}, "
                                                 f"{fmt((r['load']['fake_loop_lag_ms'] or {}).get('p99'))}")]
    errors = r["errors"]
    rows.append(("server log errors", str(sum(g["count"] for g in errors["server_log"].values()))))
    rows += [(f"  {g['count']}x ({g['in_pause']} in pause)", key[:110]) for key, g in errors["server_log"].items()]
    rows.append(("caller / fake / soak errors", f"{len(errors['callers'])} / {len(errors['fake'])} / "
                                                f"{len(errors['soak'])}"))
    rows += [("", e[:120]) for e in (errors["soak"] + errors["callers"])[:8]]
    for label, value in rows:
        print(f"{label:36} {value}")
    print(f"{'t s':>5} {'live':>4} {'frames':>7} {'late':>5} {'gaps':>4} {'queue':>5} {'cores: all':>10} "
          f"{'this run':>8}  RSS MB per worker")
    for b in r["timeline"]:
        print(f"{b['t']:>5} {b['live']:>4} {b['frames']:>7} {b['late_20ms']:>5} {b['gaps']:>4} "
              f"{fmt(b['journal_queue']):>5} {b['machine_cores']:>10} {b['run_cores']:>8}  "
              + " ".join(f"{v}" for v in b["rss_mb"].values()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=100)
    parser.add_argument("--minutes", type=float, default=5)
    parser.add_argument("--drop-share", type=float, default=0.05)
    parser.add_argument("--db-pause-s", type=float, default=30)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", default=None, help="where to write the figures (default bench/results/)")
    args = parser.parse_args(argv)
    hard_s = args.minutes * 60 + 120

    with tempfile.TemporaryDirectory(prefix="soak-") as tmp:
        run = Run(args.calls, args.minutes * 60, args.workers, 200, Path(tmp),
                  env={"SHUTDOWN_DRAIN_S": str(DRAIN_S), "GRACEFUL_TIMEOUT": str(GRACEFUL_TIMEOUT_S)},
                  fake_args=["--drop-share", str(args.drop_share), "--seed", str(args.seed)])
        body = soak = None
        started = time.monotonic()
        try:
            server = run.start()
            soak = Soak(args, run)
            soak.born.update((pid, born(pid)) for pid in worker_pids(server.pid))
            gc.freeze()  # as the server does: no full collection walks the startup objects mid-run
            bench_lag = LoopLag().start()
            body = gevent.spawn(soak.go, server.pid)
            body.join(timeout=max(1.0, hard_s - (time.monotonic() - started)))
            timed_out = not body.ready()
            if timed_out:
                print(f"soak: hard timeout after {hard_s:.0f} s: stopping everything", file=sys.stderr)
                gevent.killall([body, *soak.greenlets], block=True, timeout=5)
            body.get(block=False)  # re-raise what the run failed with
            run.ticker.stop()
            bench_lag.stop()
        finally:
            if soak is not None:
                gevent.killall([g for g in [body, *soak.greenlets] if g is not None], block=False)
            run.stop()
            for pid, start in (soak.born if soak else {}).items():  # a worker left behind by a killed master
                try:
                    if born(pid) == start:
                        os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
            if (run.tmp / "server.log").exists():
                log_text, kept = keep_server_log(run, "soak-server.log")
        result = figures(soak, read_fake_stats(run), log_text, bench_lag.summary())
        result["server_log"], result["hard_timeout"] = str(kept), timed_out
        soak.db.dispose()

    print_table(result)
    out = Path(args.json) if args.json else ROOT / "bench" / "results" / f"soak-{args.calls}x{args.minutes:g}m.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, default=str))
    print(f"figures written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
