"""The call's recording: started through Twilio's REST API, reported by Twilio's callback,
transcribed per channel for a better transcript than the live one, with the live turns as
the fallback."""
import base64
import dataclasses
import io
import time
import wave
from array import array

import pytest
import requests
from flask import request
from twilio.request_validator import RequestValidator

from services.logging_setup import call_logger
from services.post_call import recording
from tests.conftest import BUSINESS_NUMBER, CALLER_NUMBER, add_business
from tests.fakes.openai_rest import DEFAULT_SUMMARY
from tests.fakes.realtime_server import RealtimeScript, Reply
from tests.fakes.twilio_caller import FakeTwilioCall, place_call, twilio_form
from tests.fakes.twilio_rest import FakeTwilioRest
from tests.fakes.waiting import wait_for
from tests.harness import TEST_TIMING
from tests.post_call_world import TEST_POST_CALL
from tests.test_post_call import CONVERSATION

ACCOUNT_SID = "AC" + "1" * 32
AUTH_TOKEN = "twilio-test-token"
PUBLIC = "https://agent.example.com"
CALLER_SEGMENTS = [(1.0, "שלום, אני רוצה תור לתספורת"), (6.0, "ביום שלישי בבוקר")]
RECORDING_NUMBER = "+972300000002"
AGENT_SEGMENTS = [(0.0, "שלום, הגעתם למספרת הבדיקה"), (3.5, "בשמחה, לאיזה יום?")]


def dual_channel_wav(seconds: float = 8.0, rate: int = 8000) -> bytes:
    """Caller on the first channel, agent on the second; each a constant level that tells them apart."""
    frames = int(seconds * rate)
    samples = array("h", [1000, -2000] * frames)
    out = io.BytesIO()
    with wave.open(out, "wb") as writer:
        writer.setnchannels(2)
        writer.setsampwidth(2)
        writer.setframerate(rate)
        writer.writeframes(samples.tobytes())
    return out.getvalue()


@pytest.fixture
def twilio_rest():
    """The fake Twilio REST API, also serving recordings' media as Twilio does (`…/Recordings/RE….wav`)."""
    fake = FakeTwilioRest()
    fake.media_requests = []
    wav = dual_channel_wav()

    def media(account_sid: str, recording_sid: str):
        auth = request.headers.get("Authorization", "")
        fake.media_requests.append({"recording_sid": recording_sid, "args": request.args.to_dict(),
                                    "auth": base64.b64decode(auth[6:]).decode() if auth.startswith("Basic ") else None})
        return wav, 200, {"Content-Type": "audio/x-wav"}

    fake.app.add_url_rule("/2010-04-01/Accounts/<account_sid>/Recordings/<recording_sid>.wav", "media", media)
    fake.start()
    yield fake
    fake.stop()


@pytest.fixture
def recorded_world(make_world, twilio_rest):
    w = make_world(settings_changes={"twilio_account_sid": ACCOUNT_SID, "twilio_auth_token": AUTH_TOKEN,
                                     "twilio_api_base_url": twilio_rest.base_url, "public_base_url": PUBLIC})
    w.openai.segments = {"caller.wav": CALLER_SEGMENTS, "agent.wav": AGENT_SEGMENTS}
    return w


def start_recording(world, call_sid: str) -> str:
    """Asked for as a call asks for it, and its sid stored as the call's journal stores it."""
    sid = recording.start(world.live.settings, call_sid, True, call_logger("call", call_sid))
    assert sid is not None
    with world.live.db.session() as session:
        recording.remember(session, call_sid, sid)
    return world.call(call_sid).recording_sid


def recording_callback(world, call_sid: str, recording_url: str, status: str = "completed", duration: str = "8"):
    form = {"AccountSid": ACCOUNT_SID, "CallSid": call_sid, "RecordingSid": recording_url.rsplit("/", 1)[-1],
            "RecordingUrl": recording_url, "RecordingStatus": status, "RecordingDuration": duration,
            "RecordingChannels": "2", "RecordingSource": "StartCallRecordingAPI"}
    signature = RequestValidator(AUTH_TOKEN).compute_signature(f"{PUBLIC}/webhook/recording_status", form)
    return requests.post(f"{world.live.base_url}/webhook/recording_status", data=form,
                         headers={"X-Twilio-Signature": signature}, timeout=5)


def test_the_summary_reads_the_recording_transcribed_per_channel_in_time_order(recorded_world, twilio_rest):
    w = recorded_world
    call_sid = w.end_call(CONVERSATION)
    recording_sid = start_recording(w, call_sid)
    assert recording_sid and w.call(call_sid).recording_status == "in-progress"
    [start] = twilio_rest.of("recording")
    assert start.call_sid == call_sid and start.value("RecordingChannels") == "dual"
    assert start.value("RecordingStatusCallback") == f"{PUBLIC}/webhook/recording_status"

    w.start_worker()
    # The job ran and put itself off: had it not waited, it would have asked for the summary by now.
    wait_for(lambda: w.jobs(call_sid, "post_call")[0].last_error == "waiting for the recording", 5,
             message="the job to wait for the recording")
    assert w.call(call_sid).summary is None, "the job waits for the recording Twilio is still finishing"
    assert w.openai.requests == []

    url = f"{twilio_rest.base_url}/2010-04-01/Accounts/{ACCOUNT_SID}/Recordings/{recording_sid}"
    assert recording_callback(w, call_sid, url).status_code == 200
    call = w.wait_processed(call_sid)

    assert call.summary == DEFAULT_SUMMARY
    transcript = w.openai.recorded("summary")[0].body["messages"][1]["content"].split("Transcript:\n", 1)[1]
    assert transcript.splitlines() == [
        "Assistant: שלום, הגעתם למספרת הבדיקה", "Caller: שלום, אני רוצה תור לתספורת",
        "Assistant: בשמחה, לאיזה יום?", "Caller: ביום שלישי בבוקר"]
    # Fetched as two channels, with the account's credentials; each channel sent alone, in Hebrew.
    [media] = twilio_rest.media_requests
    assert media["args"] == {"RequestedChannels": "2"} and media["auth"] == f"{ACCOUNT_SID}:{AUTH_TOKEN}"
    uploads = w.openai.recorded("transcription")
    assert sorted(u.file_name for u in uploads) == ["agent.wav", "caller.wav"]
    assert all(u.body["language"] == "he" and u.body["response_format"] == "verbose_json" for u in uploads)
    assert all(u.body["model"] == w.live.settings.post_call.transcribe_model for u in uploads)
    assert all("מספרת הבדיקה" in u.body["prompt"] for u in uploads)
    assert all(u.file_bytes == 44 + 8 * 8000 * 2 for u in uploads), "one mono channel per upload"

    body = requests.get(f"{w.live.base_url}/api/calls/{call_sid}", timeout=5).json()
    assert body["transcript_source"] == "recording"
    assert body["recording"] == {"sid": recording_sid, "status": "completed", "url": url, "duration_s": 8.0}
    assert [t["speaker"] for t in body["recording_transcript"]] == ["agent", "caller", "agent", "caller"]
    wait_for(lambda: w.receiver.accepted(), 5, message="the webhook event")
    assert w.receiver.accepted()[0].event["transcript_source"] == "recording"


def test_without_the_recording_in_time_the_live_turns_are_used(make_world, twilio_rest):
    w = make_world(settings_changes={"twilio_account_sid": ACCOUNT_SID, "twilio_auth_token": AUTH_TOKEN,
                                     "twilio_api_base_url": twilio_rest.base_url, "public_base_url": PUBLIC,
                                     "post_call": dataclasses.replace(TEST_POST_CALL, recording_wait_s=1.0)})
    started = time.monotonic()
    call_sid = w.end_call(CONVERSATION)
    start_recording(w, call_sid)
    w.start_worker()
    call = w.wait_processed(call_sid)
    assert time.monotonic() - started >= 0.95, "it waited for the recording first"
    assert call.summary == DEFAULT_SUMMARY and call.recording_transcript is None
    assert "Caller: היי, מדברת דנה לוי" in w.openai.recorded("summary")[0].body["messages"][1]["content"]
    assert w.openai.recorded("transcription") == []


def test_a_transcription_without_timestamps_falls_back_to_the_live_turns(recorded_world, twilio_rest):
    w = recorded_world
    w.openai.transcription_has_segments = False
    call_sid = w.end_call(CONVERSATION)
    recording_sid = start_recording(w, call_sid)
    recording_callback(w, call_sid, f"{twilio_rest.base_url}/2010-04-01/Accounts/{ACCOUNT_SID}/Recordings/{recording_sid}")
    w.start_worker()
    call = w.wait_processed(call_sid)
    assert len(w.openai.recorded("transcription")) == 2
    assert "Caller: היי, מדברת דנה לוי" in w.openai.recorded("summary")[0].body["messages"][1]["content"]
    assert call.recording_transcript is None and call.recording_status == "completed"


def test_a_recording_url_off_twilio_never_gets_the_account_credentials(recorded_world, twilio_rest):
    w = recorded_world
    call_sid = w.end_call(CONVERSATION)
    start_recording(w, call_sid)
    recording_callback(w, call_sid, "https://elsewhere.example.net/Recordings/RE123")
    w.start_worker()
    call = w.wait_processed(call_sid)
    assert twilio_rest.media_requests == [] and w.openai.recorded("transcription") == []
    assert call.summary == DEFAULT_SUMMARY


def test_recording_callbacks_must_be_signed_by_twilio(recorded_world):
    form = {"CallSid": "CAx", "RecordingStatus": "completed", "RecordingUrl": "https://api.twilio.com/x"}
    response = requests.post(f"{recorded_world.live.base_url}/webhook/recording_status", data=form, timeout=5)
    assert response.status_code == 403


def test_a_business_that_does_not_record_asks_twilio_for_nothing(recorded_world, twilio_rest):
    call_sid = recorded_world.end_call(CONVERSATION)
    assert recording.start(recorded_world.live.settings, call_sid, False, call_logger("call", call_sid)) is None
    assert twilio_rest.of("recording") == [] and recorded_world.call(call_sid).recording_sid is None


def _signed_call(world, call_sid: str, to: str = BUSINESS_NUMBER):
    """An inbound call placed and streamed the way Twilio does it when the auth token is set."""
    validator = RequestValidator(AUTH_TOKEN)
    form = twilio_form(call_sid, CALLER_NUMBER, to, ACCOUNT_SID)
    placed = place_call(world.live.base_url, call_sid, CALLER_NUMBER, to, account_sid=ACCOUNT_SID,
                        headers={"X-Twilio-Signature": validator.compute_signature(f"{PUBLIC}/webhook/incoming_call",
                                                                                   form)})
    assert placed.stream_url, placed.twiml
    signature = validator.compute_signature(f"wss://{PUBLIC.split('://')[1]}/ws/twilio-media", {})
    return FakeTwilioCall(world.live.media_url, call_sid, placed.parameters,
                          headers={"X-Twilio-Signature": signature}).start()


def test_the_stream_starting_starts_a_dual_channel_recording_unless_the_business_opts_out(
        make_world, make_fake_realtime, twilio_rest):
    realtime = make_fake_realtime(RealtimeScript(default_reply=Reply("שלום, הגעתם למספרת הבדיקה", 600)))
    w = make_world(record_calls=False, settings_changes={
        "twilio_account_sid": ACCOUNT_SID, "twilio_auth_token": AUTH_TOKEN, "twilio_api_base_url": twilio_rest.base_url,
        "public_base_url": PUBLIC, "openai_realtime_url": realtime.url, "timing": TEST_TIMING})
    add_business(w.live, RECORDING_NUMBER, record_calls=True)
    # The business that opts out is called first; the recording of the one that records, asked
    # for later through the same fake Twilio, is the sign that the first call's ask would have come.
    for call_sid, to in (("CAnotrecorded", BUSINESS_NUMBER), ("CArecorded", RECORDING_NUMBER)):
        caller = _signed_call(w, call_sid, to)
        try:
            caller.wait_heard(600, timeout=5)
        finally:
            caller.stop()
    wait_for(lambda: w.call("CArecorded").recording_sid, 5, message="the recording's sid on the call")
    starts = twilio_rest.of("recording")
    assert [s.call_sid for s in starts] == ["CArecorded"], "only the business that records asks Twilio"
    [start] = starts
    assert start.auth_user == ACCOUNT_SID and start.value("RecordingChannels") == "dual"
    assert start.value("RecordingStatusCallback") == f"{PUBLIC}/webhook/recording_status"
    assert w.call("CArecorded").recording_status == "in-progress"
    assert w.call("CAnotrecorded").recording_sid is None
