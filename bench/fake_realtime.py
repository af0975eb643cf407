"""The fake Realtime API in its own process, keeping per-connection timings for the benchmark.

`python -m bench.fake_realtime --port P --stats FILE [--first-byte-ms X] [--audio-ms Y]`
serves until SIGTERM, then writes one JSON record per closed connection to FILE.
"""
from gevent import monkey

monkey.patch_all()

import json  # noqa: E402

from bench.lean_realtime import fake_arguments, serve_until_sigterm  # noqa: E402
from tests.fakes.realtime_server import FakeRealtime, RealtimeConnection, RealtimeScript, Reply  # noqa: E402


def summarize(conn: RealtimeConnection) -> dict:
    return {
        "speech_started": [t for t, e in conn.server_events if e["type"] == "input_audio_buffer.speech_started"],
        "responses": [{"item_id": r.item_id, "created_at": r.created_at, "first_audio_at": r.first_audio_at,
                       "status": r.status} for r in conn.responses],
        "truncates": [{"t": t.t, "item_id": t.item_id, "audio_end_ms": t.audio_end_ms} for t in conn.truncates],
        "invalid_events": len(conn.invalid_events),
        "double_responses": len(conn.double_responses),
        "errors": [e.get("error", {}).get("code") for e in conn.errors],
    }


def main() -> None:
    args = fake_arguments()
    records: list[dict] = []
    script = RealtimeScript(responses=[Reply("שלום, הגעתם לעסק הבדיקה, איך אפשר לעזור?", args.greeting_ms)],
                            default_reply=Reply("תשובה לדוגמה מהסוכן, עם כמה מילים בעברית.", args.audio_ms),
                            first_byte_ms=args.first_byte_ms)
    fake = FakeRealtime(script, port=args.port, history=False, on_closed=lambda c: records.append(summarize(c)))
    fake.start()
    serve_until_sigterm()
    fake.stop()
    with open(args.stats, "w") as fh:
        json.dump(records, fh)


if __name__ == "__main__":
    main()
