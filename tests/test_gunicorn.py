"""The production way: `gunicorn -c gunicorn.conf.py app:app` with the gevent worker, one whole call;
and the old deployment's gevent-websocket worker, refused."""

import os
import subprocess
import sys

import pytest
import requests

from services.store.db import Database
from services.store.models import Call
from tests.conftest import BUSINESS_NUMBER, CALLER_NUMBER
from tests.fakes.openai_rest import DEFAULT_SUMMARY, FakeOpenAI
from tests.fakes.realtime_server import FakeRealtime, RealtimeScript, Reply
from tests.fakes.twilio_caller import FakeTwilioCall, place_call
from tests.fakes.waiting import wait_for
from tests.gunicorn_proc import ROOT, free_port, running_gunicorn



@pytest.fixture
def gunicorn_server(tmp_path):
    fake = FakeRealtime(RealtimeScript(responses=[Reply("שלום, הגעתם למספרה", 1000), Reply("בשמחה", 600)],
                                       caller_transcripts=["אפשר לקבוע תור?"])).start()
    openai_rest = FakeOpenAI().start()
    db_url = f"sqlite:///{tmp_path / 'gunicorn.db'}"
    env = {"DATABASE_URL": db_url, "OPENAI_REALTIME_URL": fake.url, "OPENAI_API_KEY": "sk-gunicorn",
           "SECRET_KEY": "gunicorn-secret", "OPENAI_BASE_URL": openai_rest.base_url, "JOB_POLL_S": "0.1",
           "REALTIME_POOL_SIZE": "2"}  # the production default
    try:
        with running_gunicorn(tmp_path, env) as server:
            yield server.base_url, server.port, fake, db_url, server.log_path
    finally:
        fake.stop()
        openai_rest.stop()


def test_a_call_through_gunicorns_gevent_worker(gunicorn_server):
    base, port, fake, db_url, log_path = gunicorn_server
    created = requests.post(f"{base}/api/businesses", json={"name": "מספרת גוניקורן",
                                                            "phone_numbers": [BUSINESS_NUMBER]}, timeout=5)
    assert created.status_code == 201, created.text
    placed = place_call(base, "CAgunicorn", CALLER_NUMBER, BUSINESS_NUMBER)
    caller = FakeTwilioCall(f"ws://127.0.0.1:{port}/ws/twilio-media", "CAgunicorn", placed.parameters).start()
    try:
        caller.wait_heard(1000, timeout=8)
        caller.wait_quiet(150)
        caller.speak(600)
        caller.wait_heard(1600, timeout=6)
        caller.wait_quiet(150)
    finally:
        caller.stop()
    assert {c.authorization for c in fake.connections} == {"Bearer sk-gunicorn"}
    assert len(fake.carried()) == 1  # the others wait in the pool for the next call
    assert fake.invalid_events == [] and fake.double_responses == []
    db = Database(db_url)

    def ended():
        with db.session() as session:
            call = session.query(Call).filter_by(call_sid="CAgunicorn").one()
            return call.ended_at is not None and [(t.speaker, t.text) for t in call.turns]

    turns = wait_for(ended, timeout=5, message="the call row to be finished")

    def summarised():
        with db.session() as session:
            return session.query(Call).filter_by(call_sid="CAgunicorn").one().summary

    # The worker process runs post-call jobs too (started by gunicorn's post_worker_init).
    assert wait_for(summarised, timeout=5, message="the post-call summary") == DEFAULT_SUMMARY
    db.dispose()
    assert turns == [("agent", "שלום, הגעתם למספרה"), ("caller", "אפשר לקבוע תור?"), ("agent", "בשמחה")]
    metrics = requests.get(f"{base}/metrics", timeout=5).text
    assert "call_greeting_latency_seconds_count 1.0" in metrics
    log_text = log_path.read_text()
    assert "Traceback" not in log_text
    assert "call_sid=CAgunicorn" in log_text


@pytest.mark.parametrize("config", [[], ["-c", str(ROOT / "gunicorn.conf.py")]], ids=["no-config", "our-config"])
def test_gevent_websocket_worker_is_refused_at_boot(tmp_path, config):
    # From an empty folder, `--chdir` to the app: without `-c`, gunicorn would read the
    # gunicorn.conf.py of the folder it starts in.
    command = [sys.executable, "-m", "gunicorn", *config, "--chdir", str(ROOT), "-b", f"127.0.0.1:{free_port()}",
               "-k", "geventwebsocket.gunicorn.workers.GeventWebSocketWorker", "app:app"]
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{tmp_path / 'refused.db'}", "SECRET_KEY": "refused-secret",
           "WEB_CONCURRENCY": "1"}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    proc = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode != 0, err
    error_lines = [line for line in err.splitlines() if "level=ERROR" in line and "area=server" in line]
    assert error_lines and "-k gevent" in error_lines[0] and "gunicorn.conf.py" in error_lines[0], err
    assert "Worker failed to boot" in err
