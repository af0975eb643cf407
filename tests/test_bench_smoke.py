"""The benchmark runs end to end: gunicorn, the lean fake Realtime API and the lean callers.

A few calls for a few seconds: it must exit 0, print its table and write figures without
errors. No timing assertions: this machine's load is not the benchmark's business here.
"""
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

ROWS = ("greeting_added_ms", "chunk_forwarding_ms_server", "chunk_forwarding_ms_seen", "barge_in_ms_server", "barge_in_ms_seen", "truncate_error_ms",
        "tx_jitter_ms", "frames dropped (unintended)", "server CPU ms per call-second", "server CPU share of one core",
        "callers (bench) CPU share of core", "fake Realtime CPU share of core", "load generators CPU share, total",
        "errors")


def test_bench_calls_runs_and_reports(tmp_path):
    out = tmp_path / "figures.json"
    proc = subprocess.run([sys.executable, "-m", "bench.calls", "--calls", "5", "--seconds", "6", "--json", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=90)
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    for row in ROWS:
        assert row in proc.stdout, f"no {row!r} row in:\n{proc.stdout}"
    figures = json.loads(out.read_text())
    assert figures["errors"] == []
    assert figures["calls"] == 5
    assert figures["greeting_added_ms"]["n"] == 5  # every call was greeted
    assert figures["barge_in_ms_seen"]["n"] >= 5  # and interrupted the agent once
    assert figures["tx_jitter_ms"]["n"] > 0
    # The server times every response's first audio (greeting, the interrupted answer, the next);
    # the callers time those they heard to their end mark (the greeting at least).
    assert figures["chunk_forwarding_ms_server"]["n"] >= 10
    assert figures["chunk_forwarding_ms_seen"]["n"] >= 5
    assert [w["calls"] for w in figures["per_worker"].values()] == [5], "one worker carried every call"


def test_bench_outside_runs_the_default_configuration_and_reports(tmp_path):
    """Signed webhooks and media upgrades, a recording started through the fake Twilio REST API
    for every call, the business made through the API, and every figure joined per call."""
    out = tmp_path / "outside.json"
    proc = subprocess.run([sys.executable, "-m", "bench.outside", "--calls", "3", "--peer", "none", "--json", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    assert "greeting added, p50 / p99 ms" in proc.stdout
    [ours] = json.loads(out.read_text())
    assert ours["errors"] == []
    assert ours["twilio_rest_requests"] >= 3  # each call's recording start
    assert (ours["calls"], ours["greeted"]) == (3, 3)
    assert ours["greeting_added_ms"]["n"] == 3
    assert ours["webhook_answer_ms"]["n"] == 3 and ours["ring_to_greeting_ms"]["n"] == 3
    # The whole wait includes the webhook's answer and the greeting's own.
    assert ours["ring_to_greeting_ms"]["p50"] > ours["greeting_added_ms"]["p50"]
    assert ours["barge_in_clear_ms"]["n"] == 3 and ours["truncate_error_ms"]["n"] == 3
    # greeting, the interrupted answer, the answer heard whole: each one's first audio timed at the phone
    assert ours["first_audio_fake_to_phone_ms"]["n"] == 9
    assert ours["caller_audio_phone_to_fake_ms"]["n"] >= 6
    assert ours["cpu_s_per_call_minute"] > 0
