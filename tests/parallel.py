"""The whole suite in a few pytest processes at once: `python -m tests.parallel [--shards N] [pytest args]`.

The suite mostly waits (real sockets, real audio time), so a few processes share two cores well.
pytest-xdist cannot run it: the conftest patches the process for gevent, which breaks xdist's
worker channel. Each shard is a plain pytest run over some of the test files (dealt by their
measured seconds, so that the shards end together), with a temporary folder of its own, its output in a log; this prints each shard's summary line, the failures'
logs, the counts over all shards twice (`N passed, N failed, N skipped`, the plain form, then
pytest's own closing line, the two forms a CI reads), and exits non-zero if any shard failed or no
test ran.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from xml.etree import ElementTree

ROOT = Path(__file__).resolve().parent.parent
# Each file's seconds in the last measured run, per database (`--write-durations` updates them):
# the files are dealt longest first, each to the shard with the least so far. A file not measured
# yet weighs by its size.
DURATIONS = ROOT / "tests" / "durations.json"
BYTES_PER_SECOND = 1500


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


def database_kind(environ=os.environ) -> str:
    return "postgresql" if environ.get("TEST_DATABASE_URL", "").startswith("postgresql") else "sqlite"


def _stored_durations() -> dict[str, dict[str, float]]:
    try:
        return json.loads(DURATIONS.read_text())
    except FileNotFoundError:
        return {}


def measured_durations(kind: str) -> dict[str, float]:
    return _stored_durations().get(kind, {})


def shards(files: list[Path], n: int, durations: dict[str, float]) -> list[list[Path]]:
    def weight(path: Path) -> float:
        return durations.get(path.name, path.stat().st_size / BYTES_PER_SECOND)

    groups: list[list[Path]] = [[] for _ in range(n)]
    load = [0.0] * n
    for path in sorted(files, key=weight, reverse=True):
        i = load.index(min(load))
        groups[i].append(path)
        load[i] += weight(path)
    return [g for g in groups if g]


def file_durations(junit_reports: list[Path]) -> dict[str, float]:
    """Seconds per test file (its tests' set-up, run and tear-down) from pytest's JUnit reports."""
    seconds: dict[str, float] = {}
    for report in junit_reports:
        if not report.exists():
            continue
        for case in ElementTree.parse(report).iter("testcase"):
            name = case.get("classname", "").split(".")[1:2]  # tests.test_x[.Class]
            if name:
                seconds[f"{name[0]}.py"] = seconds.get(f"{name[0]}.py", 0.0) + float(case.get("time", 0))
    return {name: round(value, 1) for name, value in sorted(seconds.items())}


def write_durations(kind: str, seconds: dict[str, float]) -> None:
    stored = _stored_durations()
    stored[kind] = seconds
    DURATIONS.write_text(json.dumps(stored, indent=1, sort_keys=True) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shards", type=int, default=int(os.environ.get("TEST_SHARDS", "4")))
    parser.add_argument("--write-durations", action="store_true",
                        help=f"store each file's seconds in this run in {DURATIONS.relative_to(ROOT)}")
    args, pytest_args = parser.parse_known_args(argv)
    files = sorted((ROOT / "tests").glob("test_*.py"))
    workdir = Path(tempfile.mkdtemp(prefix="tests-parallel-"))
    started = time.monotonic()
    kind = database_kind()
    runs = []
    for k, group in enumerate(shards(files, max(1, args.shards), measured_durations(kind))):
        log = workdir / f"shard-{k}.log"
        command = [sys.executable, "-m", "pytest", "-q", "-rfE", f"--basetemp={workdir / f'tmp-{k}'}",
                   f"--junitxml={workdir / f'shard-{k}.xml'}",
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
    if args.write_durations and status == 0:
        # A file none of whose tests ran here (all left out on this database) weighs nothing.
        write_durations(kind, {path.name: 0.0 for path in files}
                        | file_durations([workdir / f"shard-{k}.xml" for k, _, _ in runs]))
    print("\n".join(closing_lines(totals, seconds)))
    return status


if __name__ == "__main__":
    sys.exit(main())
