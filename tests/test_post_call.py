"""After the call: summary, extraction, lead, and the business's webhook, as durable jobs."""
import hashlib
import hmac

import requests

from services.store.call_records import open_call
from services.store.models import Business, Lead, WebhookDelivery
from services.post_call.webhook import encode
from services.post_call.worker import JobWorker
from tests.conftest import CALLER_NUMBER
from tests.fakes.openai_rest import DEFAULT_EXTRACTION, DEFAULT_SUMMARY
from tests.fakes.realtime_server import RealtimeScript, Reply
from tests.fakes.waiting import wait_for
from tests.post_call_world import TEST_POST_CALL, WEBHOOK_SECRET

CONVERSATION = [
    ("agent", "שלום, הגעתם למספרת הבדיקה, איך אפשר לעזור?"),
    ("caller", "היי, מדברת דנה לוי, אני רוצה לקבוע תספורת ליום שלישי בבוקר"),
    ("agent", "בשמחה דנה, יש לי עשר בבוקר, מתאים?"),
    ("caller", "מעולה, תודה"),
]


def test_a_finished_call_gets_its_summary_extraction_and_lead(world):
    world.start_worker()
    call_sid = world.end_call(CONVERSATION)
    call = world.wait_processed(call_sid)

    assert call.summary == DEFAULT_SUMMARY
    assert call.extraction["caller_name"] == "דנה לוי" and call.extraction["appointment_booked"] is True
    assert call.extraction["service_requested"] == "תספורת" and call.extraction["urgency"] == "normal"
    [lead] = world.leads()
    assert lead.phone == CALLER_NUMBER and lead.name == "דנה לוי" and lead.city == "תל אביב"
    assert call.lead_id == lead.id and lead.last_call_at is not None

    # What OpenAI was asked: the transcript with the caller's words, a strict schema, our key.
    summary_req, extraction_req = world.openai.recorded("summary"), world.openai.recorded("extraction")
    assert len(summary_req) == 1 and len(extraction_req) == 1 and world.openai.invalid == []
    user_text = extraction_req[0].body["messages"][1]["content"]
    assert "Caller: היי, מדברת דנה לוי" in user_text and "Assistant: בשמחה דנה" in user_text
    assert CALLER_NUMBER in user_text
    assert extraction_req[0].body["response_format"]["json_schema"]["strict"] is True
    assert "Hebrew" in summary_req[0].body["messages"][0]["content"]
    assert extraction_req[0].authorization == "Bearer sk-test"
    assert extraction_req[0].body["model"] == world.live.settings.post_call.model

    # The admin API shows it all.
    body = requests.get(f"{world.live.base_url}/api/calls/{call_sid}", timeout=5).json()
    assert body["summary"] == DEFAULT_SUMMARY and body["extraction"]["outcome"] == DEFAULT_EXTRACTION["outcome"]
    assert body["lead_id"] == lead.id and body["transcript_source"] == "live"
    assert body["post_call"]["status"] == "done" and body["post_call"]["attempts"] == 1
    lead_body = requests.get(f"{world.live.base_url}/api/leads?phone=%2B972501234567", timeout=5).json()["leads"][0]
    assert lead_body["name"] == "דנה לוי" and lead_body["city"] == "תל אביב"


def test_a_whole_call_is_summarised_within_seconds_of_the_hang_up(make_harness, fake_openai):
    h = make_harness(RealtimeScript(responses=[Reply("שלום, הגעתם למספרת הבדיקה", 800), Reply("בשמחה, לאיזה יום?", 600)],
                                    caller_transcripts=["אני רוצה לקבוע תור"]),
                     openai_base_url=fake_openai.base_url, post_call=TEST_POST_CALL)
    worker = JobWorker(h.live.db, h.live.settings).start()
    try:
        caller = h.call()
        caller.wait_heard(800, timeout=5)
        caller.wait_quiet(150)
        caller.speak(600)
        caller.wait_heard(1400, timeout=6)
        caller.wait_quiet(150)
        caller.stop()
        h.wait_ended(caller.call_sid)
        wait_for(lambda: h.stored(caller.call_sid).row.summary, 3, message="the summary within 3 s of the end")
    finally:
        worker.stop()
    row = h.stored(caller.call_sid).row
    assert row.summary == DEFAULT_SUMMARY and row.extraction["caller_name"] == "דנה לוי" and row.lead_id
    transcript = fake_openai.recorded("summary")[0].body["messages"][1]["content"]
    assert "Caller: אני רוצה לקבוע תור" in transcript and "Assistant: שלום, הגעתם למספרת הבדיקה" in transcript


def test_the_model_failing_twice_then_answering_still_gives_one_summary_and_one_event(world):
    world.openai.fail_next(2)  # both requests of the first attempt
    world.start_worker()
    call_sid = world.end_call(CONVERSATION)
    call = world.wait_processed(call_sid)

    assert call.summary == DEFAULT_SUMMARY
    [job] = world.jobs(call_sid, "post_call")
    assert job.attempts == 2 and job.last_error is None
    assert [r.status for r in world.openai.recorded("summary")] == [500, 200]
    assert [r.status for r in world.openai.recorded("extraction")] == [500, 200]
    assert len(world.leads()) == 1
    wait_for(lambda: world.receiver.accepted(), 5, message="the webhook event")
    assert len(world.receiver.accepted()) == 1


def test_a_job_that_keeps_failing_is_given_up_with_its_error(world):
    world.openai.fail_next(100, status=503)
    world.start_worker(max_attempts=3)
    call_sid = world.end_call(CONVERSATION)
    wait_for(lambda: world.jobs(call_sid, "post_call")[0].status == "failed", 8, message="the job to fail")
    [job] = world.jobs(call_sid, "post_call")
    assert job.attempts == 3 and "503" in job.last_error
    assert world.call(call_sid).summary is None and world.receiver.received == []
    body = requests.get(f"{world.live.base_url}/api/calls/{call_sid}", timeout=5).json()
    assert body["post_call"]["status"] == "failed" and "503" in body["post_call"]["last_error"]


def test_a_call_where_the_caller_never_spoke_gets_a_no_conversation_outcome_without_the_model(world):
    world.start_worker()
    call_sid = world.end_call([("agent", "שלום, הגעתם למספרת הבדיקה, איך אפשר לעזור?")])
    call = world.wait_processed(call_sid)

    assert world.openai.requests == []
    assert call.summary == "לא התקיימה שיחה: המתקשר ניתק לפני שאמר דבר."
    assert call.extraction["outcome"] == "המתקשר ניתק לפני שאמר דבר."
    assert call.extraction["follow_up_needed"] is True and call.extraction["appointment_booked"] is False
    [lead] = world.leads()  # a missed caller is still someone to call back
    assert lead.phone == CALLER_NUMBER and lead.name is None and call.lead_id == lead.id


def test_a_call_with_no_turns_at_all_after_a_failure_says_so(world):
    world.start_worker()
    call_sid = world.end_call([], end_reason="realtime_unavailable")
    call = world.wait_processed(call_sid)
    assert world.openai.requests == []
    assert call.extraction["outcome"] == "השיחה נותקה בגלל תקלה לפני שהמתקשר דיבר."


def test_the_business_webhook_gets_one_signed_event_after_retries_on_500(world):
    world.receiver.answer_next(500, 500)
    world.start_worker()
    call_sid = world.end_call(CONVERSATION)
    world.wait_processed(call_sid)
    wait_for(lambda: world.jobs(call_sid, "webhook") and world.jobs(call_sid, "webhook")[0].status == "done", 8,
             message="the webhook job to be done")

    received = world.receiver.received
    assert [r.status for r in received] == [500, 500, 200] and all(r.signature_ok for r in received)
    assert len({r.headers["X-Agent-Event-Id"] for r in received}) == 1, "retries resend the same event"
    [accepted] = world.receiver.accepted()
    event = accepted.event
    assert accepted.headers["X-Agent-Event"] == "call.completed" and event["type"] == "call.completed"
    assert event["id"] == accepted.headers["X-Agent-Event-Id"]
    assert event["call"]["call_sid"] == call_sid and event["call"]["from"] == CALLER_NUMBER
    assert event["call"]["is_test"] is False
    assert [t["text"] for t in event["turns"]] == [text for _, text in CONVERSATION]
    assert event["summary"] == DEFAULT_SUMMARY and event["extraction"]["caller_name"] == "דנה לוי"
    assert event["lead"]["name"] == "דנה לוי" and event["lead"]["phone"] == CALLER_NUMBER

    body = requests.get(f"{world.live.base_url}/api/calls/{call_sid}", timeout=5).json()
    hook = body["webhook"]
    assert hook["status"] == "delivered" and hook["attempts"] == 3 and hook["event_id"] == event["id"]
    assert [(d["attempt"], d["status_code"], d["ok"]) for d in hook["deliveries"]] == [
        (1, 500, False), (2, 500, False), (3, 200, True)]


def test_the_signature_covers_timestamp_and_body_with_the_business_secret(world):
    world.start_worker()
    call_sid = world.end_call(CONVERSATION)
    world.wait_processed(call_sid)
    wait_for(lambda: world.receiver.accepted(), 8, message="the webhook event")
    [received] = world.receiver.received
    body = encode(received.event)
    timestamp = received.headers["X-Agent-Timestamp"]

    def signature(secret: str, signed_body: bytes) -> str:  # what the business's receiver computes
        return "sha256=" + hmac.new(secret.encode(), f"{timestamp}.".encode() + signed_body, hashlib.sha256).hexdigest()

    sent = received.headers["X-Agent-Signature"]
    assert sent == signature(WEBHOOK_SECRET, body)
    assert sent != signature(WEBHOOK_SECRET, body.replace("דנה".encode(), "רנה".encode()))
    assert sent != signature("whsec_other_secret_0000000000", body)


def test_a_business_without_a_webhook_gets_no_delivery(make_world):
    w = make_world(webhook=False)
    w.start_worker()
    call_sid = w.end_call(CONVERSATION)
    w.wait_processed(call_sid)
    assert w.jobs(call_sid, "webhook") == [] and w.receiver.received == []
    body = requests.get(f"{w.live.base_url}/api/calls/{call_sid}", timeout=5).json()
    assert body["webhook"] is None


def test_reprocess_runs_the_job_again_and_sends_a_new_event(world):
    world.start_worker()
    call_sid = world.end_call(CONVERSATION)
    world.wait_processed(call_sid)
    wait_for(lambda: len(world.receiver.accepted()) == 1, 8, message="the first event")

    world.openai.summary = "סיכום מעודכן של השיחה עם דנה."
    response = requests.post(f"{world.live.base_url}/api/calls/{call_sid}/reprocess", timeout=5)
    assert response.status_code == 202 and response.json()["post_call"]["status"] == "queued"
    wait_for(lambda: world.call(call_sid).summary == "סיכום מעודכן של השיחה עם דנה.", 8, message="the new summary")
    wait_for(lambda: len(world.receiver.accepted()) == 2, 8, message="the second event")
    first, second = world.receiver.accepted()
    assert first.event["id"] != second.event["id"] and second.event["summary"] == "סיכום מעודכן של השיחה עם דנה."
    assert len(world.leads()) == 1


def test_reprocess_of_an_unknown_or_unfinished_call_is_refused(world):
    assert requests.post(f"{world.live.base_url}/api/calls/CAnope/reprocess", timeout=5).status_code == 404
    with world.live.db.session() as session:
        open_call(session, call_sid="CAlive", business=session.get(Business, world.business_id), direction="inbound",
                  from_number=CALLER_NUMBER, to_number="+972300000001", status="in-progress")
    response = requests.post(f"{world.live.base_url}/api/calls/CAlive/reprocess", timeout=5)
    assert response.status_code == 409 and "not ended" in response.json()["error"]


def test_a_second_call_keeps_the_known_name_when_the_model_gives_a_placeholder_or_less(world):
    world.start_worker()
    world.wait_processed(world.end_call(CONVERSATION))
    for said in ("לקוחה", "דנה", None):
        world.openai.extraction = {**DEFAULT_EXTRACTION, "caller_name": said, "city": None}
        world.wait_processed(world.end_call(CONVERSATION))
    [lead] = world.leads()
    assert lead.name == "דנה לוי" and lead.city == "תל אביב"

    world.openai.extraction = {**DEFAULT_EXTRACTION, "caller_name": "דנה לוי-כהן"}
    world.wait_processed(world.end_call(CONVERSATION))
    assert world.leads()[0].name == "דנה לוי-כהן", "a fuller form of the known name replaces it"


def test_a_placeholder_name_from_the_model_is_not_stored_in_the_extraction(world):
    world.openai.extraction = {**DEFAULT_EXTRACTION, "caller_name": "unknown"}
    world.start_worker()
    call = world.wait_processed(world.end_call(CONVERSATION))
    assert call.extraction["caller_name"] is None and world.leads()[0].name is None


def test_a_withheld_number_uses_the_number_the_caller_said(world):
    world.openai.extraction = {**DEFAULT_EXTRACTION, "phone": "052-765-4321"}
    world.start_worker()
    call = world.wait_processed(world.end_call(CONVERSATION, caller="anonymous"))
    [lead] = world.leads()
    assert lead.phone == "+972527654321" and call.lead_id == lead.id


def test_an_extraction_that_breaks_the_schema_is_retried(world):
    world.openai.extraction = {"caller_name": "דנה"}  # most keys missing
    world.start_worker(max_attempts=2)
    call_sid = world.end_call(CONVERSATION)
    wait_for(lambda: world.jobs(call_sid, "post_call")[0].status == "failed", 8, message="the job to fail")
    assert "schema" in world.jobs(call_sid, "post_call")[0].last_error
    assert world.call(call_sid).summary is None


def test_every_delivery_attempt_is_stored(world):
    world.receiver.answer_next(502)
    world.start_worker()
    call_sid = world.end_call(CONVERSATION)
    world.wait_processed(call_sid)
    wait_for(lambda: world.receiver.accepted(), 8, message="the event")

    def deliveries():
        # The attempt is stored once the receiver's answer is back: after `accepted()` turned true.
        with world.live.db.session() as session:
            rows = session.query(WebhookDelivery).order_by(WebhookDelivery.id).all()
            return len(rows) == 2 and [(r.attempt, r.status_code, r.ok, r.url, r.error) for r in rows]

    stored = wait_for(deliveries, 5, message="both attempts stored")
    seen = [row[:4] for row in stored]
    errors = [row[4] for row in stored]
    assert seen == [(1, 502, False, world.receiver.url), (2, 200, True, world.receiver.url)]
    assert "HTTP 502" in errors[0] and errors[1] is None
    with world.live.db.session() as session:
        assert session.query(Lead).count() == 1


def test_the_webhook_and_recording_are_set_through_the_businesses_api(live_server):
    base = f"{live_server.base_url}/api/businesses"
    created = requests.post(base, json={"name": "מספרת ה-API", "webhook_url": "https://crm.example.com/hooks"},
                            timeout=5).json()
    assert created["webhook_url"] == "https://crm.example.com/hooks" and created["record_calls"] is True
    assert created["webhook_secret"].startswith("whsec_") and len(created["webhook_secret"]) > 32

    bad = requests.patch(f"{base}/{created['id']}", json={"webhook_url": "ftp://crm.example.com", "webhook_secret": "short",
                                                          "record_calls": "yes"}, timeout=5)
    assert bad.status_code == 422 and set(bad.json()["fields"]) == {"webhook_url", "webhook_secret", "record_calls"}

    changed = requests.patch(f"{base}/{created['id']}", json={"webhook_secret": "whsec_rotated_0123456789",
                                                              "record_calls": False, "webhook_url": None}, timeout=5)
    assert changed.status_code == 200
    body = requests.get(f"{base}/{created['id']}", timeout=5).json()
    assert body["webhook_url"] is None and body["record_calls"] is False
    assert body["webhook_secret"] == "whsec_rotated_0123456789"
