"""Calls measured from outside: what the phone hears and what the Realtime API receives.

    python -m bench.outside --calls 50 [--rate 40] [--workers 1] [--peer twilio-sample | --peer-cmd CMD] [--profile PATH]

The server runs as deployed by default: `gunicorn -c gunicorn.conf.py app:app`, Twilio
credentials set (every webhook and media upgrade signed, every call recorded; Twilio's REST
API answered by a small fake in this process), an admin token, the business created through
the API. Calls arrive `--rate` a second; each is a greeting, a question, an answer the caller
interrupts, another question and its whole answer, then a hang-up. The fake Realtime API
(`bench.lean_realtime`, first byte after `--first-byte-ms`) and the callers (`bench.lean_caller`)
time everything with the machine's one monotonic clock; every figure comes from them, none
from the server.

The same load then runs against a peer in the same run, one after the other: `--peer
twilio-sample` (`bench.twilio_sample`: Twilio's sample at a fixed commit, changed only to read
its Realtime URL from the environment and to speak first) or any `--peer-cmd` that serves a
TwiML webhook (`--peer-webhook`) and a media stream, reading PORT and OPENAI_REALTIME_URL.

Figures, per target (p50 / p99 where it is a distribution):
- greeting added: first audio at the phone − `start` sent − the fake's own time to first byte
- the webhook's answer: its request sent → its TwiML back (the caller still hears ringing)
- ring to greeting, less the model: the webhook's request sent → first audio at the phone − the
  fake's own time to first byte (the whole wait of a caller, ringing included)
- a response's first audio, fake → phone: its first delta sent → its first frame at the phone
- caller audio, phone → fake: a speech burst's first frame sent → the fake's `speech_started`
- barge-in `clear`: the fake's `speech_started` → `clear` at the phone
- truncate error: |`audio_end_ms` the fake was told − what the phone had played of that answer|
- buffered ahead at the phone: audio queued to play when a frame arrives (what a barge-in
  leaves the caller hearing when there is no `clear`)
- underruns: silences of 5 ms or more inside one answer
- CPU and RSS growth of the server's process tree, per call-minute and per call
"""
from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import base64  # noqa: E402
import bisect  # noqa: E402
import gc  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import shlex  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import socket  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402
from urllib.parse import urlsplit  # noqa: E402

import gevent  # noqa: E402
import requests  # noqa: E402
from gevent.pywsgi import WSGIServer  # noqa: E402
from twilio.request_validator import RequestValidator  # noqa: E402

from bench import twilio_sample  # noqa: E402
from bench.calls import CLOCK_TICK_MS, free_port, percentile  # noqa: E402
from bench.lean_caller import LeanCall, Ticker  # noqa: E402
from bench.twilio_peer import SPEECH_FRAME, TEST_ACCOUNT_SID, caller_tag_frame, parse_twiml, twilio_form  # noqa: E402
from bench.waiting import wait_for  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
BUSINESS_NUMBER = "+972300000001"
AUTH_TOKEN = "bench-twilio-auth-token"
ADMIN_TOKEN = "bench-admin-token"
UNDERRUN_MS = 5.0


# --- the server's process tree ----------------------------------------------------------


def tree_pids(root: int) -> list[int]:
    pids, todo = [], [root]
    while todo:
        pid = todo.pop()
        pids.append(pid)
        try:
            todo += [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
        except OSError:
            pass
    return pids


def tree_cpu_ms(root: int) -> float:
    total = 0.0
    for pid in tree_pids(root):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) * CLOCK_TICK_MS
    return total


def tree_rss_kb(root: int) -> int:
    total = 0
    for pid in tree_pids(root):
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total


# --- Twilio's REST API, as far as recording a call goes -----------------------------------


class TwilioRestFake:
    """Answers every request as Twilio would a recording start; counts them."""

    def __init__(self) -> None:
        self.port = free_port()
        self.requests = 0
        self.server = WSGIServer(("127.0.0.1", self.port), self._app, log=None, error_log=None)

    def _app(self, environ, start_response):
        self.requests += 1
        environ["wsgi.input"].read()
        body = json.dumps({"sid": "RE" + uuid.uuid4().hex, "status": "in-progress", "channels": 1,
                           "source": "StartCallRecordingAPI", "track": "both"}).encode()
        start_response("201 Created", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
        return [body]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


# --- one call -----------------------------------------------------------------------------


class OutsideCall(LeanCall):
    """A lean caller that sends what Twilio sends (sequence numbers, chunks, timestamps), tags
    its silence with its number, and keeps the times the outside figures need."""

    def __init__(self, *args, tag: int, rang_at: float, webhook_ms: float, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.tag = tag
        self.rang_at = rang_at  # the webhook's request sent
        self.webhook_ms = webhook_ms  # until its TwiML came back
        b64 = lambda audio: base64.b64encode(audio).decode("ascii")  # noqa: E731
        # Its silence carries its tag: whichever frames a server holds, drops or forwards, the
        # fake can tell the call.
        self._payloads = (b64(caller_tag_frame(tag)), b64(SPEECH_FRAME))
        self._head = '{"event":"media","sequenceNumber":"%d","streamSid":"' + self.stream_sid + \
            '","media":{"track":"inbound","chunk":"%d","timestamp":"%d","payload":"%s"}}'
        self.speech_sent_at: list[float] = []
        self.ahead_ms: list[float] = []  # audio queued at the phone as each frame arrived
        self._was_speaking = False

    def _next_frame(self, n: int) -> bytes:
        speaking = n < self._speak_until_frame
        if speaking and not self._was_speaking:
            self.speech_sent_at.append(time.monotonic())
        self._was_speaking = speaking
        payload = self._payloads[1 if speaking else 0]
        return self._frame((self._head % (n + 3, n + 1, n * 20, payload)).encode())

    def _on_media(self, now: float, nbytes: int) -> None:
        ahead = self._play_end - now
        self.ahead_ms.append(ahead * 1000 if ahead > 0 else 0.0)
        super()._on_media(now, nbytes)


@dataclass
class Target:
    name: str
    command: list[str]
    webhook_path: str
    env: dict[str, str]
    signed: bool  # webhooks and the media upgrade carry X-Twilio-Signature
    health_path: str
    setup: object = None  # called with the Target once it answers (creates the business)
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def public_base_url(self) -> str:
        return self.env.get("PUBLIC_BASE_URL", self.base_url)


def one_call(target: Target, index: int, ticker: Ticker, errors: list[str]) -> OutsideCall | None:
    call_sid = f"CAout{index:028d}"
    validator = RequestValidator(AUTH_TOKEN)
    url = target.base_url + target.webhook_path
    public = target.public_base_url + target.webhook_path  # what Twilio signs
    form = twilio_form(call_sid, f"+97250{index:07d}", BUSINESS_NUMBER)
    headers = {"X-Twilio-Signature": validator.compute_signature(public, form)} if target.signed else {}
    try:
        rang_at = time.monotonic()
        response = requests.post(url, data=form, headers=headers, timeout=10)
        webhook_ms = (time.monotonic() - rang_at) * 1000
        placed = parse_twiml(response.status_code, response.text)
        if placed.stream_url is None:
            raise RuntimeError(f"the webhook connected no stream (HTTP {response.status_code})")
        # The stream's path from the TwiML, on the target's own port (the sample names no port).
        path = urlsplit(placed.stream_url).path
        ws_headers = {}
        if target.signed:
            ws_headers["X-Twilio-Signature"] = validator.compute_signature(f"wss://127.0.0.1:{target.port}{path}", {})
        caller = OutsideCall(f"ws://127.0.0.1:{target.port}{path}", call_sid, placed.parameters, ticker=ticker,
                             headers=ws_headers, tag=index, rang_at=rang_at, webhook_ms=webhook_ms).start()
    except Exception as exc:  # noqa: BLE001 - a benchmark counts failures instead of stopping
        errors.append(f"{call_sid}: could not start: {exc!r}")
        return None
    try:
        caller.wait_heard(1400, timeout=15)  # the greeting
        caller.wait_quiet(100, timeout=15)
        caller.speak(600)
        caller.wait_heard(caller.heard_ms + 800 + 600 + 400, timeout=15)  # 800 ms into the answer
        caller.speak(600)  # the barge-in
        caller.wait_clear(timeout=10)
        caller.wait_quiet(100, timeout=15)
        caller.speak(600)
        caller.wait_heard(caller.heard_ms + 2400, timeout=15)  # the whole answer
        caller.wait_quiet(100, timeout=15)
    except AssertionError as exc:
        errors.append(f"{call_sid}: {exc}")
    finally:
        caller.stop()
    errors.extend(f"{call_sid}: {e}" for e in caller.protocol_errors + caller.greenlet_errors)
    return caller


# --- one target ------------------------------------------------------------------------


def start_profile(root: int, out: Path) -> subprocess.Popen:
    """py-spy over the server's process tree from the first call to the last one's end (not its
    start-up), folded stacks; a SIGINT ends it."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(spy).exists():
        raise SystemExit("--profile needs py-spy: .venv/bin/pip install py-spy")
    return subprocess.Popen([spy, "record", "--pid", str(root), "--subprocesses", "--rate", "250", "--format", "raw",
                             "--nonblocking", "--output", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def run_target(target: Target, calls: int, rate: float, first_byte_ms: int, tmp: Path, handshake_ms: int = 0,
               profile: Path | None = None, latency_ms: int = 0) -> dict:
    fake_port = free_port()
    stats = tmp / f"fake-{target.name}.json"
    fake = subprocess.Popen([sys.executable, "-m", "bench.lean_realtime", "--port", str(fake_port),
                             "--stats", str(stats), "--first-byte-ms", str(first_byte_ms),
                             "--handshake-ms", str(handshake_ms), "--latency-ms", str(latency_ms)], cwd=ROOT)
    target.env = {k: v.format(port=target.port) for k, v in target.env.items()}
    env = {**os.environ, "PORT": str(target.port), "OPENAI_API_KEY": "sk-bench",
           "OPENAI_REALTIME_URL": f"ws://127.0.0.1:{fake_port}/v1/realtime", **target.env}
    log_path = ROOT / "bench" / "results" / f"outside-{target.name}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    target.proc = subprocess.Popen(target.command, cwd=ROOT, env=env, stdout=open(log_path, "wb"),
                                   stderr=subprocess.STDOUT)
    errors: list[str] = []
    try:
        def up():
            try:
                return requests.get(target.base_url + target.health_path, timeout=0.5).ok
            except requests.RequestException:
                return False

        def fake_up():
            try:
                socket.create_connection(("127.0.0.1", fake_port), timeout=0.5).close()
                return True
            except OSError:
                return False

        wait_for(up, timeout=60, message=f"{target.name} to answer")
        wait_for(fake_up, timeout=10, message="the fake Realtime API")
        if target.setup is not None:
            target.setup(target)
        gevent.sleep(1.0)  # the workers' start-up work done
        root = target.proc.pid
        cpu_before, rss_before = tree_cpu_ms(root), tree_rss_kb(root)
        rss_peak = rss_before
        spy = start_profile(root, profile.with_suffix(f".{target.name}.txt")) if profile else None
        if spy is not None:
            gevent.sleep(0.5)  # py-spy attached before the first call
        ticker = Ticker()
        started = time.monotonic()
        greenlets = [gevent.spawn_later(i / rate, one_call, target, i, ticker, errors) for i in range(calls)]
        while not all(g.ready() for g in greenlets):
            gevent.sleep(0.25)
            rss_peak = max(rss_peak, tree_rss_kb(root))
        elapsed = time.monotonic() - started
        cpu = tree_cpu_ms(root) - cpu_before
        ticker.stop()
        callers = [g.value for g in greenlets if g.value is not None]
        if spy is not None:
            spy.send_signal(signal.SIGINT)  # py-spy writes what it has and exits
            spy.wait(timeout=30)
    finally:
        for proc in (target.proc, fake):
            proc.send_signal(signal.SIGTERM)
        for proc in (target.proc, fake):
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
    records = json.loads(stats.read_text())["connections"] if stats.exists() else []
    if not stats.exists():
        errors.append("the fake Realtime API wrote no figures")
    return figures(target, callers, records, cpu, rss_peak - rss_before, elapsed, errors)


# --- figures ---------------------------------------------------------------------------------


def _first_at_or_after(times: list[float], t: float) -> float | None:
    i = bisect.bisect_left(times, t)
    return times[i] if i < len(times) else None


def _last_at_or_before(times: list[float], t: float) -> float | None:
    i = bisect.bisect_right(times, t)
    return times[i - 1] if i else None


def _underruns(arrivals: list[float], start: float, end: float) -> list[float]:
    """Silences (ms) of UNDERRUN_MS or more while one answer plays, its frames played back to back."""
    gaps, play_end = [], None
    for t in arrivals[bisect.bisect_left(arrivals, start):bisect.bisect_left(arrivals, end)]:
        if play_end is not None and (t - play_end) * 1000 >= UNDERRUN_MS:
            gaps.append((t - play_end) * 1000)
        play_end = max(t, play_end or t) + 0.020
    return gaps


def figures(target: Target, callers: list[OutsideCall], records: list[dict], cpu_ms: float, rss_kb: float,
            elapsed: float, errors: list[str]) -> dict:
    by_tag: dict[int, dict] = {}
    for record in records:  # in the order they connected: a call's first connection is its own
        if record.get("caller_tag") is not None:
            by_tag.setdefault(record["caller_tag"], record)
    greeting, first_audio, caller_audio, clear_after, truncate_error, ahead, underruns = [], [], [], [], [], [], []
    webhook, ring_to_greeting = [c.webhook_ms for c in callers], []
    greeted = 0
    greeting_parts = []  # where each call's greeting time went
    for caller in callers:
        if caller.first_audio_received_at is not None:
            greeted += 1
        ahead += caller.ahead_ms
        record = by_tag.get(caller.tag)
        if record is None:
            errors.append(f"{caller.call_sid}: no Realtime connection carried it")
            continue
        responses = [r for r in record["responses"] if r["first_audio_at"] is not None]
        if responses and caller.first_audio_received_at is not None:
            r0 = responses[0]
            model_ms = (r0["first_audio_at"] - r0["created_at"]) * 1000
            greeting.append((caller.first_audio_received_at - caller.started_at) * 1000 - model_ms)
            ring_to_greeting.append((caller.first_audio_received_at - caller.rang_at) * 1000 - model_ms)
            greeting_parts.append({"call": caller.tag, "start_to_create_ms": (r0["created_at"] - caller.started_at) * 1000,
                                   "fake_first_byte_ms": model_ms,
                                   "fake_to_phone_ms": (caller.first_audio_received_at - r0["first_audio_at"]) * 1000})
        starts = []  # each answer's first frame at the phone
        for r in responses:
            arrival = _first_at_or_after(caller.arrivals, r["first_audio_at"])
            if arrival is not None:
                first_audio.append((arrival - r["first_audio_at"]) * 1000)
                starts.append(arrival)
        for t in record["speech_started"]:
            sent = _last_at_or_before(caller.speech_sent_at, t)
            if sent is not None:
                caller_audio.append((t - sent) * 1000)
        for clear in caller.clears:
            heard_start = _last_at_or_before(record["speech_started"], clear.t)
            if heard_start is not None:
                clear_after.append((clear.t - heard_start) * 1000)
        for clear, truncate in zip(caller.clears, record["truncates"]):
            answer_start = _last_at_or_before(starts, clear.t)
            if answer_start is None:
                continue
            heard = sum(s.heard_ms_at(clear.t) for s in caller.segments
                        if s.first_received_at is not None and answer_start <= s.first_received_at <= clear.t)
            truncate_error.append(abs(truncate["audio_end_ms"] - heard))
        ends = starts[1:] + [float("inf")]
        clears = [c.t for c in caller.clears]
        for start, end in zip(starts, ends):
            cut = _first_at_or_after(clears, start)
            underruns += _underruns(caller.arrivals, start, min(end, cut if cut is not None else end))
    call_minutes = sum((c.closed_at or c.started_at) - c.started_at for c in callers) / 60

    def p(values):
        return {"p50": percentile(values, 50), "p99": percentile(values, 99), "n": len(values)}

    return {
        "target": target.name, "calls": len(callers), "greeted": greeted, "elapsed_s": round(elapsed, 1),
        "greeting_added_ms": p(greeting),
        "webhook_answer_ms": p(webhook),
        "ring_to_greeting_ms": p(ring_to_greeting),
        "first_audio_fake_to_phone_ms": p(first_audio),
        "caller_audio_phone_to_fake_ms": p(caller_audio),
        "barge_in_clear_ms": p(clear_after),
        "truncate_error_ms": p(truncate_error),
        "buffered_ahead_ms": {**p(ahead), "max": max(ahead, default=None)},
        "underruns": {"count": len(underruns), "max_ms": max(underruns, default=None)},
        "cpu_s_per_call_minute": round(cpu_ms / 1000 / call_minutes, 3) if call_minutes else None,
        "rss_kb_per_call": round(rss_kb / len(callers), 1) if callers else None,
        "greeting_parts": greeting_parts,
        "errors": errors,
    }


ROWS = (
    ("greeting added, p50 / p99 ms", "greeting_added_ms"),
    ("webhook's answer, p50 / p99 ms", "webhook_answer_ms"),
    ("ring to greeting, less the model, p50 / p99", "ring_to_greeting_ms"),
    ("first audio fake → phone, p50 / p99 ms", "first_audio_fake_to_phone_ms"),
    ("caller audio phone → fake, p50 / p99 ms", "caller_audio_phone_to_fake_ms"),
    ("barge-in clear, p50 / p99 ms", "barge_in_clear_ms"),
    ("truncate error, p50 / p99 ms", "truncate_error_ms"),
    ("buffered ahead at the phone, p50 / p99 ms", "buffered_ahead_ms"),
)


def median_of(results: list[dict]) -> dict:
    """One target's figures over several runs: each number the median of its runs (a p99 the
    median of the runs' p99s), the errors of them all."""
    merged: dict = {"runs": len(results)}
    for key, value in results[0].items():
        values = [r.get(key) for r in results]
        value = next((v for v in values if v is not None), None)  # a run without underruns has no max
        if key == "errors":
            merged[key] = [f"run {k + 1}: {e}" for k, r in enumerate(results) for e in r[key]]
        elif isinstance(value, dict):
            merged[key] = median_of(values)
            merged[key].pop("runs")
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            numbers = [v for v in values if isinstance(v, (int, float))]
            middle = statistics.median(numbers) if numbers else None
            whole = middle is not None and middle == int(middle) and all(isinstance(v, int) for v in numbers)
            merged[key] = int(middle) if whole else middle
        else:
            merged[key] = value
    return merged


def print_table(results: list[dict]) -> None:
    def fmt(v):
        return "-" if v is None else f"{v:.1f}" if abs(v) < 100 else f"{v:.0f}"

    names = [r["target"] for r in results]
    print(f"{'from outside':44}" + "".join(f"{n:>22}" for n in names))
    print(f"{'calls greeted / placed':44}" + "".join(f"{str(r['greeted']) + ' / ' + str(r['calls']):>22}"
                                                      for r in results))
    for label, key in ROWS:
        print(f"{label:44}" + "".join(f"{fmt(r[key]['p50']) + ' / ' + fmt(r[key]['p99']):>22}" for r in results))
    print(f"{'underruns ≥ 5 ms (count, max ms)':44}"
          + "".join(f"{str(r['underruns']['count']) + ', ' + fmt(r['underruns']['max_ms']):>22}" for r in results))
    print(f"{'server CPU s per call-minute':44}" + "".join(f"{fmt(r['cpu_s_per_call_minute']):>22}" for r in results))
    print(f"{'server RSS growth per call, KB':44}" + "".join(f"{fmt(r['rss_kb_per_call']):>22}" for r in results))
    if len(results) == 2 and results[1]["cpu_s_per_call_minute"]:
        print(f"{'CPU, ours / peer':44}{results[0]['cpu_s_per_call_minute'] / results[1]['cpu_s_per_call_minute']:>22.2f}")
    for r in results:
        print(f"{r['target']}: {len(r['errors'])} errors")
        for error in r["errors"][:8]:
            print(f"  {error}")


# --- the targets -----------------------------------------------------------------------------


def ours(workers: int, calls: int, rest: TwilioRestFake, tmp: Path) -> Target:
    def create_business(target: Target) -> None:
        response = requests.post(f"{target.base_url}/api/businesses", timeout=10,
                                 headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
                                 # The cut at the first sound of speech: its clear is what this times
                                 # (hold-then-decide, the default, is bench.barge_in_hold's).
                                 json={"name": "עסק הבדיקה", "phone_numbers": [BUSINESS_NUMBER],
                                       "max_concurrent_calls": calls * 2, "barge_in_mode": "immediate"})
        response.raise_for_status()

    env = {"DATABASE_URL": f"sqlite:///{tmp / 'ours.db'}", "WEB_CONCURRENCY": str(workers),
           "TWILIO_ACCOUNT_SID": TEST_ACCOUNT_SID, "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
           "TWILIO_API_BASE_URL": rest.base_url, "ADMIN_API_TOKEN": ADMIN_TOKEN, "SECRET_KEY": "bench",
           # As deployed: Twilio reaches the server at a public https address (recordings report there).
           "PUBLIC_BASE_URL": "https://127.0.0.1:{port}",
           "MAX_CONCURRENT_CALLS": str(calls * 2), "HOST": "127.0.0.1",
           # Post-call jobs would call the OpenAI REST API: the benchmark measures the calls.
           "POST_CALL_WORKERS": "0"}
    # No control socket: its default path is one per user, shared with any other gunicorn running.
    command = [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "--no-control-socket", "app:app"]
    return Target("ours", command, "/webhook/incoming_call", env, signed=True, health_path="/healthz",
                  setup=create_business)


def peer(args) -> Target | None:
    if args.peer_cmd:
        return Target(args.peer_name, shlex.split(args.peer_cmd), args.peer_webhook, {}, signed=False,
                      health_path=args.peer_health)
    if args.peer == "twilio-sample":
        command = twilio_sample.prepare(args.sample_source, args.sample_commit)
        return Target("twilio-sample", command, twilio_sample.WEBHOOK_PATH, {}, signed=False, health_path="/")
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=50)
    parser.add_argument("--rate", type=float, default=40, help="new calls a second")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--first-byte-ms", type=int, default=200)
    parser.add_argument("--latency-ms", type=int, default=0,
                        help="the fake handles each client message this late: a round trip to a distant service")
    parser.add_argument("--handshake-ms", type=int, default=0,
                        help="the fake's delay before accepting a connection (TLS to a distant service: 150-300)")
    parser.add_argument("--peer", choices=("twilio-sample", "none"), default="twilio-sample")
    parser.add_argument("--sample-source", default=twilio_sample.SOURCE, help="a git directory or URL")
    parser.add_argument("--sample-commit", default=twilio_sample.COMMIT)
    parser.add_argument("--peer-cmd", help="another peer's command (PORT and OPENAI_REALTIME_URL from the environment)")
    parser.add_argument("--peer-name", default="peer")
    parser.add_argument("--peer-webhook", default="/incoming-call")
    parser.add_argument("--peer-health", default="/")
    parser.add_argument("--json", default=None)
    parser.add_argument("--repeat", type=int, default=1,
                        help="run ours and the peer this many times, in turn; each figure is then the median of its runs")
    parser.add_argument("--profile", type=Path, default=None,
                        help="py-spy folded stacks of each target from its first call to its last one's end, to PROFILE.<target>.txt")
    args = parser.parse_args(argv)

    rest = TwilioRestFake()
    rest.server.start()
    gc.freeze()
    runs: list[list[dict]] = []
    with tempfile.TemporaryDirectory(prefix="bench-outside-") as tmp:
        for k in range(max(1, args.repeat)):
            run_tmp = Path(tmp) / f"run-{k}"
            run_tmp.mkdir()
            targets = [ours(args.workers, args.calls, rest, run_tmp)]
            other = peer(args)
            if other is not None:
                targets.append(other)
            runs.append([run_target(target, args.calls, args.rate, args.first_byte_ms, run_tmp, args.handshake_ms,
                                    args.profile, args.latency_ms) for target in targets])
            if args.repeat > 1:
                print(f"run {k + 1} of {args.repeat}")
                print_table(runs[-1])
    results = runs[0] if len(runs) == 1 else [median_of([run[i] for run in runs]) for i in range(len(runs[0]))]
    if rest.requests == 0:
        results[0]["errors"].append("no call started a recording (Twilio's REST API was never called)")
    results[0]["twilio_rest_requests"] = rest.requests
    print(f"calls={args.calls} rate={args.rate}/s workers={args.workers} first_byte_ms={args.first_byte_ms} "
          f"handshake_ms={args.handshake_ms} latency_ms={args.latency_ms}"
          + (f", medians of {len(runs)} runs" if len(runs) > 1 else ""))
    print_table(results)
    out = Path(args.json) if args.json else ROOT / "bench" / "results" / f"outside-{args.calls}x{args.workers}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"figures written to {out}")
    return 1 if any(r["errors"] for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
