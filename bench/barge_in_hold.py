"""Barge-in, hold then decide: calls with backchannels and real interruptions, under gunicorn.

    python -m bench.barge_in_hold --calls 10 [--mode hold|immediate|off] [--transcript-delay-ms 300] [--json FILE]

The processes of `bench.calls` (gunicorn, the lean fake Realtime API, the lean callers), the
business set to `--mode`. Each call: the greeting, a question, and four answers the caller speaks
over 800 ms in: "כן" (250 ms: a backchannel), a long interruption (1500 ms: longer than the hold's
bound), "לא, ביום שני" (300 ms: short, but it takes the turn), "אהה" (250 ms: a backchannel). The
fake transcribes each turn `--transcript-delay-ms` after its commit (the real API takes a few
hundred ms). Prints, for the backchannels and for the interruptions, how many the agent went on
over and how many it was cut by, the silence the caller heard on a resume (at the phone, and as
the server counted it), and how soon after the speech began the caller stopped hearing the agent.
"""
from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import json  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import gevent  # noqa: E402
import requests  # noqa: E402

from bench.calls import BUSINESS_NUMBER, ROOT, Run, keep_server_log, percentile  # noqa: E402
from bench.lean_caller import LeanCall  # noqa: E402
from bench.twilio_peer import place_call  # noqa: E402
from bench.waiting import wait_for  # noqa: E402
from services.store.db import Database  # noqa: E402
from services.store.models import Call  # noqa: E402

QUESTION = "מה השעות שלכם?"
# (what the caller says over an answer, how long, whether it is a backchannel)
OVER_THE_AGENT = (("כן", 250, True), ("רגע, אני רוצה לשאול משהו אחר", 1500, False),
                  ("לא, ביום שני", 300, False), ("אהה", 250, True))
# The caller's turns in order, as the fake transcribes them: after an answer gone on with to its
# end, the caller asks again; after a cut, the interruption is the turn the next answer answers.
TRANSCRIPTS = [QUESTION] + [said for n, (said, _, backchannel) in enumerate(OVER_THE_AGENT)
                            for said in ((said, QUESTION) if backchannel and n < len(OVER_THE_AGENT) - 1 else (said,))]
ANSWER_MS = 4000
INTO_ANSWER_MS = 800
GAP_MS = 100  # a silence this long inside an answer is the hold's (pacing leaves none near it)


def one_call(run: Run, index: int, errors: list[str]) -> dict | None:
    """The call's script; returns what the caller saw of each time it spoke over the agent."""
    call_sid = f"CAhold{index:027d}"
    try:
        placed = place_call(run.base_url, call_sid, f"+97250{index:07d}", BUSINESS_NUMBER)
        caller = LeanCall(f"ws://127.0.0.1:{run.port}/ws/twilio-media", call_sid, placed.parameters,
                          ticker=run.ticker).start()
    except Exception as exc:  # noqa: BLE001 - a benchmark counts failures instead of stopping
        errors.append(f"{call_sid}: could not start: {exc!r}")
        return None
    spoken = []
    try:
        caller.wait_heard(1000, timeout=15)
        caller.wait_quiet(100, timeout=15)
        caller.speak(600)
        for said, ms, is_backchannel in OVER_THE_AGENT:
            answer_at = caller.heard_ms
            caller.wait_heard(answer_at + INTO_ANSWER_MS, timeout=15)
            clears = len(caller.clears)
            segment = len(caller.segments) - 1
            at = time.monotonic()
            caller.speak(ms)
            # Cut, or gone on with: all of the answer has come (a hold is silence, not the answer's end).
            wait_for(lambda: len(caller.clears) > clears or caller.segments[segment].received_ms >= ANSWER_MS,
                     timeout=20, message="the agent cut, or going on")
            caller.wait_quiet(300, timeout=20)
            spoken.append({"said": said, "backchannel": is_backchannel, "at": at, "segment": segment,
                           "cut": len(caller.clears) > clears,
                           "clear_after_ms": (caller.clears[clears].t - at) * 1000 if len(caller.clears) > clears
                           else None})
            if is_backchannel and said != OVER_THE_AGENT[-1][0]:
                caller.speak(600)  # a question again, for the next answer
    except AssertionError as exc:
        errors.append(f"{call_sid}: {exc}")
    finally:
        caller.stop()
    errors.extend(f"{call_sid}: {e}" for e in caller.protocol_errors + caller.greenlet_errors)
    for turn in spoken:
        turn.update(_silence(caller, turn))
    return {"call_sid": call_sid, "spoken": spoken}


def _silence(caller: LeanCall, turn: dict) -> dict:
    """In the answer spoken over: when the caller stopped hearing it (after the speech began), and
    the silence until it went on (None if it did not)."""
    runs = caller.arrival_runs()
    if turn["segment"] >= len(runs):
        return {"agent_silent_after_ms": None, "silence_heard_ms": None}
    times = runs[turn["segment"]]
    playout_end = times[0] if times else 0.0
    stopped_at = None
    for arrival in times:
        if arrival > playout_end and (arrival - playout_end) * 1000 >= GAP_MS and playout_end >= turn["at"]:
            return {"agent_silent_after_ms": (playout_end - turn["at"]) * 1000,
                    "silence_heard_ms": (arrival - playout_end) * 1000}
        playout_end = max(arrival, playout_end) + 0.020
    if turn["clear_after_ms"] is not None:
        playout_end = min(playout_end, turn["at"] + turn["clear_after_ms"] / 1000)  # what was left was cleared
    if playout_end > turn["at"]:
        stopped_at = (playout_end - turn["at"]) * 1000  # cut: the last audio it heard ended then
    return {"agent_silent_after_ms": stopped_at, "silence_heard_ms": None}


def summarise(mode: str, delay_ms: int, calls: list[dict], stored: list[dict], errors: list[str]) -> dict:
    turns = [t for call in calls for t in call["spoken"]]

    def p(values):
        values = [v for v in values if v is not None]
        return {"p50": percentile(values, 50), "p99": percentile(values, 99), "max": max(values, default=None),
                "n": len(values)}

    def kind(backchannel: bool) -> dict:
        mine = [t for t in turns if t["backchannel"] == backchannel]
        return {"spoken": len(mine), "went_on": sum(not t["cut"] for t in mine), "cut": sum(t["cut"] for t in mine),
                "agent_silent_after_ms": p([t["agent_silent_after_ms"] for t in mine]),
                "clear_after_ms": p([t["clear_after_ms"] for t in mine])}

    return {
        "mode": mode, "transcript_delay_ms": delay_ms, "calls": len(calls),
        "backchannels": kind(True), "interruptions": kind(False),
        "resume_silence_heard_ms": p([t["silence_heard_ms"] for t in turns if not t["cut"]]),
        "server": {"holds": sum(m.get("barge_in_holds", 0) for m in stored),
                   "resumes": sum(m.get("barge_in_resumes", 0) for m in stored),
                   "cuts": sum(m.get("barge_in_cuts", 0) for m in stored),
                   "resume_silence_ms": p([v for m in stored for v in m.get("resume_silence_ms", [])]),
                   "barge_in_latency_ms": p([v for m in stored for v in m.get("barge_in_latency_ms", [])])},
        "errors": errors,
    }


def print_table(r: dict) -> None:
    def fmt(v):
        return "-" if v is None else f"{v:.0f}"

    print(f"mode={r['mode']} calls={r['calls']} transcript_delay_ms={r['transcript_delay_ms']}")
    print(f"{'':28} {'spoken':>7} {'went on':>8} {'cut':>5}   agent silent after (p50/p99 ms)   clear after (p50/p99)")
    for key in ("backchannels", "interruptions"):
        k = r[key]
        print(f"{key:28} {k['spoken']:>7} {k['went_on']:>8} {k['cut']:>5}   "
              f"{fmt(k['agent_silent_after_ms']['p50']):>6} / {fmt(k['agent_silent_after_ms']['p99']):<6}"
              f"                  {fmt(k['clear_after_ms']['p50']):>6} / {fmt(k['clear_after_ms']['p99'])}")
    s, srv = r["resume_silence_heard_ms"], r["server"]
    print(f"{'silence heard on a resume':28} p50 {fmt(s['p50'])} ms, p99 {fmt(s['p99'])}, max {fmt(s['max'])} (n={s['n']})")
    ss = srv["resume_silence_ms"]
    print(f"{'  as the server counted it':28} p50 {fmt(ss['p50'])} ms, p99 {fmt(ss['p99'])}, max {fmt(ss['max'])}")
    print(f"{'server: holds/resumes/cuts':28} {srv['holds']} / {srv['resumes']} / {srv['cuts']}")
    lat = srv["barge_in_latency_ms"]
    print(f"{'server: speech to silenced':28} p50 {fmt(lat['p50'])} ms, p99 {fmt(lat['p99'])} (n={lat['n']})")
    print(f"{'errors':28} {len(r['errors'])}")
    for error in r["errors"][:10]:
        print(f"  {error}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=10)
    parser.add_argument("--mode", choices=("hold", "immediate", "off"), default="hold")
    parser.add_argument("--transcript-delay-ms", type=int, default=300)
    parser.add_argument("--json", default=None, help="where to write the figures (default bench/results/)")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="bench-hold-") as tmp:
        run = Run(args.calls, 0, 1, 200, Path(tmp), fake_args=[
            "--greeting-ms", "1000", "--audio-ms", str(ANSWER_MS), "--transcript-delay-ms", str(args.transcript_delay_ms),
            "--caller-transcripts", json.dumps(TRANSCRIPTS, ensure_ascii=False)])
        errors: list[str] = []
        try:
            run.start()
            requests.patch(f"{run.base_url}/api/businesses/1", json={"barge_in_mode": args.mode},
                           timeout=5).raise_for_status()
            greenlets = [gevent.spawn_later(i * 0.1, one_call, run, i, errors) for i in range(args.calls)]
            gevent.joinall(greenlets)
            calls = [g.value for g in greenlets if g.value is not None]
            gevent.sleep(1.0)  # the last rows are written as their streams close
        finally:
            run.ticker.stop()
            run.stop()
        db = Database(run.db_url)
        with db.session() as session:
            stored = [row.metrics or {} for row in session.query(Call).all()]
        db.dispose()
        server_log, kept = keep_server_log(run, "server-barge-in-hold.log")
        if "Traceback" in server_log or "level=ERROR" in server_log:
            errors.append(f"the server logged errors: see {kept}")
        result = summarise(args.mode, args.transcript_delay_ms, calls, stored, errors)

    print_table(result)
    out = Path(args.json) if args.json else ROOT / "bench" / "results" / f"barge-in-{args.mode}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, ensure_ascii=False))
    print(f"figures written to {out}")
    return 1 if result["errors"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
