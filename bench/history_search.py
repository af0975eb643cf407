"""How long the console's call history takes to search transcripts, on SQLite, with many stored calls.

    python -m bench.history_search --calls 5000 --turns 12

Fills a fresh SQLite file (the migrations' schema) with calls of a few businesses, each with
turns of Hebrew text, then times the history's first page (server.console.views.calls) for a
word many calls said, a word one call said, and a word no call said, alone and with a business
and a date filter; prints the median of a few runs per query, in ms.
"""
from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from datetime import timedelta
from pathlib import Path

from server.console.access import Viewer
from server.console.views.calls import PAGE_SIZE, CallHistoryFilter, history_query
from services.store.db import Database
from services.store.models import Business, Call, Turn, utcnow

WORDS = ("שלום", "תור", "מחר", "בבוקר", "תודה", "מספרה", "לקבוע", "אפשר", "שעה", "מתי", "כן", "לא", "בסדר")


def fill(db: Database, calls: int, turns: int, businesses: int, seed: int = 7) -> None:
    rng = random.Random(seed)
    now = utcnow()
    with db.session() as session:
        owners = [Business(name=f"עסק {i}") for i in range(businesses)]
        session.add_all(owners)
        session.flush()
        ids = [b.id for b in owners]
    for start in range(0, calls, 500):
        with db.session() as session:
            for n in range(start, min(calls, start + 500)):
                started = now - timedelta(minutes=n * 7)
                call = Call(call_sid=f"CAbench{n:026d}", business_id=ids[n % len(ids)], status="completed",
                            started_at=started, ended_at=started + timedelta(minutes=2))
                said = [" ".join(rng.choices(WORDS, k=rng.randint(4, 14))) for _ in range(turns)]
                if n == calls // 2:
                    said[-1] += " אינסטלטור"  # the one call that said it
                call.turns = [Turn(speaker="caller" if i % 2 else "agent", text=text,
                                   started_at=started + timedelta(seconds=i * 5)) for i, text in enumerate(said)]
                session.add(call)


def timed(db: Database, query: CallHistoryFilter, runs: int) -> tuple[float, int]:
    times, found = [], 0
    for _ in range(runs):
        with db.session() as session:
            began = time.perf_counter()
            found = len(session.scalars(history_query(Viewer(business_id=None), query).limit(PAGE_SIZE + 1)).all())
            times.append((time.perf_counter() - began) * 1000)
    return statistics.median(times), found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=5000)
    parser.add_argument("--turns", type=int, default=12)
    parser.add_argument("--businesses", type=int, default=5)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        db = Database(f"sqlite:///{Path(folder) / 'bench.db'}")
        db.upgrade()
        began = time.perf_counter()
        fill(db, args.calls, args.turns, args.businesses)
        print(f"{args.calls} calls, {args.calls * args.turns} turns, filled in {time.perf_counter() - began:.1f} s")
        week_ago = (utcnow() - timedelta(days=7)).date().isoformat()
        for label, word in (("common word", "תור"), ("one call's word", "אינסטלטור"), ("no call's word", "זברה")):
            for filters, extra in (("alone", {}), ("one business", {"business_id": "2"}),
                                   ("last week", {"date_from": week_ago})):
                ms, found = timed(db, CallHistoryFilter.model_validate({"q": word, **extra}), args.runs)
                print(f"{label:16} {filters:13} {ms:8.1f} ms  ({found} rows)")
        ms, found = timed(db, CallHistoryFilter(), args.runs)
        print(f"{'no search':16} {'alone':13} {ms:8.1f} ms  ({found} rows)")
        db.dispose()


if __name__ == "__main__":
    main()
