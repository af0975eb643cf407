"""The whole suite in a few pytest processes at once: `python -m tests.parallel [--shards N] [pytest args]`.

The suite mostly waits (real sockets, real audio time), so a few processes share two cores well.
pytest-xdist cannot run it: the conftest patches the process for gevent, which breaks xdist's
worker channel. Each shard is a plain pytest run over some of the test files, with a temporary
folder of its own, its output in a log; this prints each shard's summary line, the failures'
logs, the counts over all shards twice (`N passed, N failed, N skipped`, the plain form, then
pytest's own closing line, the two forms a CI reads), and exits non-zero if any shard failed or no
test ran.
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Files that take much longer than their size says (gunicorn processes, a benchmark run, many
# calls): placed first, each on the shard with the least so far.
SLOW = {"test_bench_smoke.py": 75, "test_scale_out.py": 60, "test_job_claims.py": 70, "test_shutdown.py": 45,
        "test_gunicorn.py": 60, "test_call_sweeper.py": 35, "test_call_limits.py": 35, "test_shutdown_parts.py": 45,
        "test_realtime_reconnect.py": 70, "test_barge_in.py": 45, "test_appointments.py": 35,
        "test_console_browser.py": 30, "test_web_edges.py": 65, "test_caller_paths.py": 60,
        "test_realtime_events.py": 60, "test_call_control.py": 45, "test_call_flow.py": 30,
        "test_barge_in_hold.py": 110, "test_console_live.py": 50, "test_warm_transfer.py": 25,
        "test_realtime_settings.py": 25, "test_console_talk.py": 20, "test_voicemail.py": 18,
        "test_console_extras.py": 15, "test_console_talk_browser.py": 14, "test_realtime_pool.py": 12}


NO_TESTS_COLLECTED = 5  # pytest's exit code when every test was left out (or none found)
COUNT = re.compile(r"(\d+) (passed|failed|skipped|errors?|xfailed|xpassed)")


def counts(summary: str) -> dict[str, int]:
    """The counts in a pytest summary line; errors and unexpected passes count as failures."""
    found = {"passed": 0, "failed": 0, "skipped": 0}
    for number, word in COUNT.findall(summary):
        key = {"error": "failed", "errors": "failed", "xpassed": "failed", "xfailed": "skipped"}.get(word, word)
        found[key] += int(number)
    return found


def closing_lines(totals: dict[str, int], seconds: float) -> list[str]:
    """The plain count line, then the same counts as pytest closes a run (zero counts left out)."""
    plain = f"{totals['passed']} passed, {totals['failed']} failed, {totals['skipped']} skipped"
    parts = [f"{totals[k]} {k}" for k in ("failed", "passed", "skipped") if totals[k]] or ["no tests ran"]
    return [plain, f"{'=' * 20} {', '.join(parts)} in {seconds:.2f}s {'=' * 20}"]


def weight(path: Path) -> float:
    return SLOW.get(path.name, path.stat().st_size / 1500)


def shards(files: list[Path], n: int) -> list[list[Path]]:
    groups: list[list[Path]] = [[] for _ in range(n)]
    load = [0.0] * n
    for path in sorted(files, key=weight, reverse=True):
        i = load.index(min(load))
        groups[i].append(path)
        load[i] += weight(path)
    return [g for g in groups if g]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shards", type=int, default=int(os.environ.get("TEST_SHARDS", "4")))
    args, pytest_args = parser.parse_known_args(argv)
    files = sorted((ROOT / "tests").glob("test_*.py"))
    workdir = Path(tempfile.mkdtemp(prefix="tests-parallel-"))
    started = time.monotonic()
    runs = []
    for k, group in enumerate(shards(files, max(1, args.shards))):
        log = workdir / f"shard-{k}.log"
        command = [sys.executable, "-m", "pytest", "-q", "-rfE", f"--basetemp={workdir / f'tmp-{k}'}",
                   *pytest_args, *(str(p.relative_to(ROOT)) for p in group)]
        runs.append((k, log, subprocess.Popen(command, cwd=ROOT, stdout=open(log, "wb"), stderr=subprocess.STDOUT)))
    status = 0
    totals = {"passed": 0, "failed": 0, "skipped": 0}
    for k, log, proc in runs:
        code = proc.wait()
        lines = log.read_text(errors="replace").splitlines()
        summary = next((line for line in reversed(lines) if " in " in line and ("passed" in line or "failed" in line
                                                                               or "error" in line)), "no summary")
        print(f"shard {k}: {summary.strip('= ')}")
        found = counts(summary)
        for key in totals:
            totals[key] += found[key]
        if code not in (0, NO_TESTS_COLLECTED):  # a shard may hold only tests a run leaves out
            status = 1
            totals["failed"] += 0 if found["failed"] else 1  # a shard that died before its summary
            print(f"--- shard {k} failed (exit {code}); its log, {log}:")
            print("\n".join(lines[-150:]))
    seconds = time.monotonic() - started
    print(f"{len(runs)} shards in {seconds:.0f} s")
    if totals["passed"] + totals["failed"] == 0:
        status = 1  # no test ran: never green
    print("\n".join(closing_lines(totals, seconds)))
    return status


if __name__ == "__main__":
    sys.exit(main())
