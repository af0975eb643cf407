"""N concurrent simulated calls against the real server under gunicorn.

    python -m bench.calls --calls 20 --seconds 15 [--workers 1] [--first-byte-ms 200] [--json FILE]

Processes: gunicorn (`gunicorn.conf.py`, gevent worker), the fake Realtime API
(`bench.lean_realtime`), and this one, which runs the N Twilio callers
(`bench.lean_caller`: 20 ms real-time frames, playout clock, marks echoed). Each call:
greeting, a question, an answer the caller interrupts once, another question, an
answer heard to the end, then more turns until the time is up. Prints one table and
writes the figures as JSON.

The load generators (this process and the fake) must not be the bottleneck: the table
shows their CPU as a share of one core. They are the benchmark's own: nothing here
imports the tests.
"""
from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import gc  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import signal  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402

import gevent  # noqa: E402
import requests  # noqa: E402

from bench.lean_caller import LeanCall, Ticker  # noqa: E402
from bench.loop_lag import LoopLag  # noqa: E402
from bench.twilio_peer import place_call  # noqa: E402
from bench.waiting import wait_for  # noqa: E402
from services.call_figures import histogram_percentile  # noqa: E402
from services.store.db import Database  # noqa: E402
from services.store.models import Call  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
BUSINESS_NUMBER = "+972300000001"
CLOCK_TICK_MS = 1000 / os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def percentile(values: list[float], p: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


# --- processes ----------------------------------------------------------------------


def worker_pids(master: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{master}/task/{master}/children").read_text().split()]
    except OSError:
        return []


def cpu_ms(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * CLOCK_TICK_MS  # utime + stime


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


@dataclass
class Run:
    calls: int
    seconds: float
    workers: int
    first_byte_ms: int
    tmp: Path
    port: int = field(default_factory=free_port)
    fake_port: int = field(default_factory=free_port)
    procs: list[subprocess.Popen] = field(default_factory=list)
    fake: subprocess.Popen | None = None
    ticker: Ticker = field(default_factory=Ticker)
    env: dict[str, str] = field(default_factory=dict)  # the server's, over the defaults below
    fake_args: list[str] = field(default_factory=list)  # more options for bench.lean_realtime

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def db_url(self) -> str:
        return f"sqlite:///{self.tmp / 'bench.db'}"

    def start(self) -> subprocess.Popen:
        fake = self.fake = subprocess.Popen([sys.executable, "-m", "bench.lean_realtime", "--port", str(self.fake_port),
                                             "--stats", str(self.tmp / "fake.json"),
                                             "--first-byte-ms", str(self.first_byte_ms), *self.fake_args],
                                            cwd=ROOT)
        self.procs.append(fake)
        env = {**os.environ, "PORT": str(self.port), "DATABASE_URL": self.db_url, "WEB_CONCURRENCY": str(self.workers),
               "OPENAI_REALTIME_URL": f"ws://127.0.0.1:{self.fake_port}/v1/realtime", "OPENAI_API_KEY": "sk-bench",
               "SECRET_KEY": "bench", "LOG_LEVEL": "INFO", "MAX_CONCURRENT_CALLS": str(self.calls * 2),
               # Loopback only, unsigned: the bench's callers are not Twilio and it uses the API untokened.
               "HOST": "127.0.0.1", "TWILIO_SIGNATURE_CHECK": "off",
               # Post-call jobs would call the OpenAI REST API; the benchmark measures calls only.
               "POST_CALL_WORKERS": "0", **self.env}
        # Loopback only (the command line's bind wins over gunicorn.conf.py's 0.0.0.0), and no
        # control socket: its default path is one per user, shared with any other gunicorn running.
        server = subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py",
                                   "--bind", f"127.0.0.1:{self.port}", "--no-control-socket", "app:app"], cwd=ROOT,
                                  env=env, stdout=open(self.tmp / "server.log", "wb"), stderr=subprocess.STDOUT)
        self.procs.append(server)

        def up():
            try:
                return requests.get(f"{self.base_url}/healthz", timeout=0.5).ok and len(worker_pids(server.pid)) == self.workers
            except requests.RequestException:
                return False

        wait_for(up, timeout=30, message="gunicorn to answer")
        wait_for(lambda: socket.create_connection(("127.0.0.1", self.fake_port), timeout=0.5), timeout=10,
                 message="the fake Realtime API")
        # The cut at the first sound of speech: barge_in_ms times it (hold-then-decide, the default,
        # is bench.barge_in_hold's).
        response = requests.post(f"{self.base_url}/api/businesses", timeout=5, json={
            "name": "עסק הבדיקה", "phone_numbers": [BUSINESS_NUMBER], "max_concurrent_calls": 1000,
            "barge_in_mode": "immediate"})
        response.raise_for_status()
        return server

    def stop(self) -> None:
        for proc in reversed(self.procs):
            proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()


def read_fake_stats(run: Run) -> dict:
    """What the fake Realtime API wrote as it stopped ({} if nothing)."""
    stats_file = run.tmp / "fake.json"
    return json.loads(stats_file.read_text()) if stats_file.exists() else {}


def keep_server_log(run: Run, name: str) -> tuple[str, Path]:
    """The server's log, copied under bench/results/ (the run's directory goes): (text, copy)."""
    text = (run.tmp / "server.log").read_text(errors="replace")
    kept = ROOT / "bench" / "results" / name
    kept.parent.mkdir(parents=True, exist_ok=True)
    kept.write_text(text)
    return text, kept


# --- one call ---------------------------------------------------------------------------


def one_call(run: Run, index: int, errors: list[str]) -> LeanCall | None:
    call_sid = f"CAbench{index:026d}"
    url = f"ws://127.0.0.1:{run.port}/ws/twilio-media"
    try:
        placed = place_call(run.base_url, call_sid, f"+97250{index:07d}", BUSINESS_NUMBER)
        caller = LeanCall(url, call_sid, placed.parameters, ticker=run.ticker).start()
    except Exception as exc:  # noqa: BLE001 - a benchmark counts failures instead of stopping
        errors.append(f"{call_sid}: could not start: {exc!r}")
        return None
    deadline = caller.started_at + run.seconds
    try:
        caller.wait_heard(1400, timeout=15)
        caller.wait_quiet(100, timeout=15)
        caller.speak(600)
        heard = caller.heard_ms
        caller.wait_heard(heard + 800 + 600 + 400, timeout=15)  # 800 ms into the answer (VAD adds 400)
        caller.speak(600)  # the barge-in
        caller.wait_clear(timeout=10)
        while time.monotonic() < deadline - 4:
            caller.wait_quiet(100, timeout=15)
            caller.speak(600)
            caller.wait_heard(caller.heard_ms + 2400, timeout=15)
        caller.wait_quiet(100, timeout=15)
        gevent.sleep(max(0.0, deadline - time.monotonic()))
    except AssertionError as exc:
        errors.append(f"{call_sid}: {exc}")
    finally:
        caller.stop()
    errors.extend(f"{call_sid}: {e}" for e in caller.protocol_errors + caller.greenlet_errors)
    return caller


# --- figures ----------------------------------------------------------------------------


def playout_gaps(callers: list[LeanCall]) -> list[tuple[float, float]]:
    """Silences inside an agent item as the caller plays it: a frame that arrives after the one
    before it has finished playing. The stutter a caller hears; none when TX keeps ahead.
    (when the frame came, the silence in ms)"""
    gaps = []
    for caller in callers:
        for times in caller.arrival_runs():
            playout_end = times[0]
            for arrival in times:
                if arrival > playout_end:
                    gaps.append((arrival, (arrival - playout_end) * 1000))
                playout_end = max(arrival, playout_end) + 0.020
    return gaps


def playout_gaps_ms(callers: list[LeanCall]) -> list[float]:
    return [ms for _, ms in playout_gaps(callers)]


def merged_histogram(stored: list[tuple[str, str, dict]], key: str) -> list[int]:
    counts = [0] * 64
    for _, _, m in stored:
        for ms, n in (m.get(key) or {}).items():
            counts[min(int(ms), 63)] += n
    return counts


def join_fake(callers: list[LeanCall], fake_records: list[dict]) -> list[tuple[LeanCall, dict]]:
    """Pair each caller with its Realtime connection by the agent items its marks name."""
    by_item = {r["item_id"]: rec for rec in fake_records for r in rec["responses"]}
    pairs = []
    for caller in callers:
        for _, name in caller.marks_received:
            record = by_item.get(name.removeprefix("item:"))
            if record is not None:
                pairs.append((caller, record))
                break
    return pairs


def figures(run: Run, callers: list, fake_records: list[dict], cpu: dict, rss: dict, load: dict,
            elapsed: float, errors: list[str]) -> dict:
    """`load`: the load generators' CPU ms over the run (`bench_cpu_ms`, `fake_cpu_ms`) and loop lags."""
    db = Database(run.db_url)
    with db.session() as session:
        rows = session.query(Call).all()
        stored = [(row.call_sid, row.end_reason, row.metrics or {}) for row in rows]
        calls_by_pid: dict[int, int] = {}
        for row in rows:
            if row.served_by:
                pid = int(row.served_by.rsplit(":", 1)[1])
                calls_by_pid[pid] = calls_by_pid.get(pid, 0) + 1
    db.dispose()
    greeting_added = [m["greeting_latency_ms"] - run.first_byte_ms for _, _, m in stored
                      if m.get("greeting_latency_ms") is not None]
    barge_in_server = [v for _, _, m in stored for v in m.get("barge_in_latency_ms", [])]
    forwarding_server = [v for _, _, m in stored for v in m.get("forwarding_ms", [])]
    dropped: dict[str, int] = {}
    for _, _, m in stored:
        for reason, count in m.get("frames_dropped", {}).items():
            dropped[reason] = dropped.get(reason, 0) + count
    # Clearing queued audio on barge-in is the point of barge-in, not a loss.
    unintended = {k: v for k, v in dropped.items() if k not in ("barge_in", "cancelled_response")}
    errors += [f"{sid}: ended {reason}" for sid, reason, _ in stored if reason != "caller_hangup"]

    forwarding, barge_in_seen, truncate_error = [], [], []
    for caller, record in join_fake(callers, fake_records):
        responses = {r["item_id"]: r for r in record["responses"]}
        for segment in caller.segments:
            response = responses.get((segment.end_mark or "").removeprefix("item:"))
            if response and response["first_audio_at"] and segment.first_received_at:
                forwarding.append((segment.first_received_at - response["first_audio_at"]) * 1000)
        for clear in caller.clears:
            started = [t for t in record["speech_started"] if t <= clear.t]
            if started:
                barge_in_seen.append((clear.t - started[-1]) * 1000)
        for clear, truncate in zip(caller.clears, record["truncates"]):
            truncate_error.append(abs(truncate["audio_end_ms"] - clear.playing_heard_ms))
        if record["invalid_events"] or record["double_responses"]:
            errors.append(f"{caller.call_sid}: {record['invalid_events']} invalid events, "
                          f"{record['double_responses']} double responses")

    call_seconds = sum((c.closed_at or c.started_at) - c.started_at for c in callers)
    lateness = merged_histogram(stored, "tx_lateness_ms")
    gaps = playout_gaps_ms(callers)

    def p(values):
        return {"p50": percentile(values, 50), "p99": percentile(values, 99), "n": len(values)}

    def share(ms):
        return round(ms / (elapsed * 1000), 3)

    return {
        "calls": run.calls, "seconds": run.seconds, "workers": run.workers, "first_byte_ms": run.first_byte_ms,
        "elapsed_s": round(elapsed, 1),
        "greeting_added_ms": p(greeting_added),
        "chunk_forwarding_ms_server": p(forwarding_server),
        "chunk_forwarding_ms_seen": p(forwarding),
        "barge_in_ms_server": p(barge_in_server),
        "barge_in_ms_seen": p(barge_in_seen),
        "truncate_error_ms": p(truncate_error),
        # TX's own figure: how late frames left against their 20 ms schedule (server-side).
        "tx_jitter_ms": {"p50": histogram_percentile(lateness, 50), "p99": histogram_percentile(lateness, 99),
                         "n": sum(lateness)},
        "playout_gaps": {"count": len(gaps), "p99_ms": percentile(gaps, 99), "max_ms": max(gaps, default=None)},
        "frames_dropped": unintended,
        "frames_cleared_by_barge_in": dropped.get("barge_in", 0),
        "server_cpu_ms_per_call_second": round(sum(cpu.values()) / call_seconds, 2) if call_seconds else None,
        "server_cpu_share_of_one_core": round(sum(cpu.values()) / (elapsed * 1000), 3),
        # Each worker's share: calls whose stream it carried, its CPU over the run, its RSS growth.
        "per_worker": {str(pid): {"calls": calls_by_pid.get(pid, 0), "cpu_ms": ms,
                                  "cpu_share_of_one_core": round(ms / (elapsed * 1000), 3), "rss_kb": rss.get(pid)}
                       for pid, ms in cpu.items()},
        "rss_kb_per_call": round(sum(rss.values()) / run.calls, 1) if run.calls else None,
        "bench_process_cpu_share_of_one_core": share(load["bench_cpu_ms"]),
        "fake_realtime_cpu_share_of_one_core": share(load["fake_cpu_ms"]),
        "load_generators_cpu_share_of_one_core": share(load["bench_cpu_ms"] + load["fake_cpu_ms"]),
        "bench_loop_lag_ms": load["bench_loop_lag_ms"],
        "fake_loop_lag_ms": load["fake_loop_lag_ms"],
        "caller_send_stalls": sum(c.send_stalls for c in callers),
        "errors": errors,
    }


def print_table(result: dict) -> None:
    def fmt(v):
        return "-" if v is None else f"{v:.2f}" if abs(v) < 10 else f"{v:.1f}"

    print(f"calls={result['calls']} seconds={result['seconds']} workers={result['workers']} "
          f"first_byte_ms={result['first_byte_ms']} elapsed_s={result['elapsed_s']}")
    print(f"{'figure':34} {'p50':>8} {'p99':>8} {'n':>7}")
    for key in ("greeting_added_ms", "chunk_forwarding_ms_server", "chunk_forwarding_ms_seen", "barge_in_ms_server",
                "barge_in_ms_seen", "truncate_error_ms", "tx_jitter_ms"):
        v = result[key]
        print(f"{key:34} {fmt(v['p50']):>8} {fmt(v['p99']):>8} {v['n']:>7}")
    gaps = result["playout_gaps"]
    print(f"{'playout gaps heard by callers':34} {gaps['count']:>8} p99 {fmt(gaps['p99_ms'])} ms, max {fmt(gaps['max_ms'])} ms")
    print(f"{'frames dropped (unintended)':34} {sum(result['frames_dropped'].values()):>8} {result['frames_dropped']}")
    print(f"{'server CPU ms per call-second':34} {fmt(result['server_cpu_ms_per_call_second']):>8}")
    print(f"{'server CPU share of one core':34} {result['server_cpu_share_of_one_core']:>8}")
    print(f"{'server RSS KB per call':34} {fmt(result['rss_kb_per_call']):>8}")
    for pid, w in result["per_worker"].items():
        print(f"{'worker ' + pid:34} {w['calls']:>5} calls, CPU {w['cpu_share_of_one_core']} of a core, "
              f"RSS +{w['rss_kb']} KB")
    print(f"{'callers (bench) CPU share of core':34} {result['bench_process_cpu_share_of_one_core']:>8}")
    print(f"{'fake Realtime CPU share of core':34} {result['fake_realtime_cpu_share_of_one_core']:>8}")
    print(f"{'load generators CPU share, total':34} {result['load_generators_cpu_share_of_one_core']:>8}")
    for key, label in (("bench_loop_lag_ms", "callers (bench) loop lag ms"),
                       ("fake_loop_lag_ms", "fake Realtime loop lag ms")):
        lag = result[key] or {"p50": None, "p99": None, "max": None}
        print(f"{label:34} {fmt(lag['p50']):>8} {fmt(lag['p99']):>8}   max {fmt(lag['max'])}")
    if result["caller_send_stalls"]:
        print(f"{'caller sends the server made wait':34} {result['caller_send_stalls']:>8}")
    print(f"{'errors':34} {len(result['errors']):>8}")
    for error in result["errors"][:10]:
        print(f"  {error}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--first-byte-ms", type=int, default=200)
    parser.add_argument("--ramp-s", type=float, default=None,
                        help="spread the call starts over this long (default: 10 new calls a second per worker)")
    parser.add_argument("--json", default=None, help="where to write the figures (default bench/results/)")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        run = Run(args.calls, args.seconds, args.workers, args.first_byte_ms, Path(tmp))
        try:
            server = run.start()
            workers = worker_pids(server.pid)
            load_pids = {"bench_cpu_ms": os.getpid(), "fake_cpu_ms": run.fake.pid}
            load_before = {name: cpu_ms(pid) for name, pid in load_pids.items()}
            cpu_before = {pid: cpu_ms(pid) for pid in workers}
            rss_before = {pid: rss_kb(pid) for pid in workers}
            rss_peak = dict(rss_before)
            errors: list[str] = []
            gc.freeze()  # as the server does: no full collection walks the startup objects mid-run
            bench_lag = LoopLag().start()
            started = time.monotonic()
            ramp_s = args.ramp_s if args.ramp_s is not None else args.calls / (10 * args.workers)
            greenlets = [gevent.spawn_later(i * ramp_s / max(1, args.calls), one_call, run, i, errors)
                         for i in range(args.calls)]
            while not all(g.ready() for g in greenlets):
                gevent.sleep(0.5)
                for pid in workers:
                    rss_peak[pid] = max(rss_peak[pid], rss_kb(pid))
            elapsed = time.monotonic() - started
            cpu = {pid: round(cpu_ms(pid) - cpu_before[pid]) for pid in workers}
            load = {name: cpu_ms(pid) - load_before[name] for name, pid in load_pids.items()}
            run.ticker.stop()
            bench_lag.stop()
            rss = {pid: rss_peak[pid] - rss_before[pid] for pid in workers}
            callers = [g.value for g in greenlets if g.value is not None]
            gevent.sleep(1.0)  # the last calls' rows are written as their streams close
        finally:
            run.stop()
        fake_stats = read_fake_stats(run)
        fake_records, fake_lag = fake_stats.get("connections", []), fake_stats.get("loop_lag_ms")
        if not fake_stats:
            errors.append("the fake Realtime API wrote no figures")
        server_log, kept = keep_server_log(run, "server.log")
        if "Traceback" in server_log or "level=ERROR" in server_log:
            errors.append(f"the server logged errors: see {kept}")
        load.update(bench_loop_lag_ms=bench_lag.summary(), fake_loop_lag_ms=fake_lag)
        result = figures(run, callers, fake_records, cpu, rss, load, elapsed, errors)

    print_table(result)
    out = Path(args.json) if args.json else ROOT / "bench" / "results" / f"calls-{args.calls}x{args.workers}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"figures written to {out}")
    return 1 if result["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
