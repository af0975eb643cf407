"""Fixtures that run the real server on loopback, under gevent, as production does."""
from gevent import monkey

monkey.patch_all()

import dataclasses  # noqa: E402
from dataclasses import dataclass  # noqa: E402

import gevent  # noqa: E402
import pytest  # noqa: E402

from server import create_app  # noqa: E402
from server.dev_server import make_server  # noqa: E402
from services.store.db import Database  # noqa: E402
from services.store.models import Business, PhoneNumber  # noqa: E402
from services.settings import CallTiming, Settings  # noqa: E402
from tests import databases  # noqa: E402

BUSINESS_NUMBER = "+972300000001"
CALLER_NUMBER = "+972501234567"


@dataclass
class LiveServer:
    app: object
    host: str
    port: int

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def media_url(self) -> str:
        return f"ws://{self.host}:{self.port}/ws/twilio-media"

    @property
    def db(self):
        return self.app.extensions["db"]

    @property
    def settings(self) -> Settings:
        return self.app.config["SETTINGS"]


@pytest.fixture(scope="session")
def _postgres_schemas():
    url = databases.server_url()
    if url is None:
        yield None
        return
    schemas = databases.Schemas(url)
    yield schemas
    schemas.drop_all()


@pytest.fixture
def database_url(tmp_path, _postgres_schemas) -> str:
    """A fresh database: SQLite in the test's folder, or a new schema on TEST_DATABASE_URL's PostgreSQL."""
    return _postgres_schemas.new_url() if _postgres_schemas else databases.sqlite_url(tmp_path)


@pytest.fixture
def settings(database_url) -> Settings:
    """Embedded defaults on a fresh database; each test may `dataclasses.replace` more."""
    return Settings(
        database_url=database_url,
        openai_api_key="sk-test",
        openai_realtime_url="ws://127.0.0.1:9/v1/realtime",  # nothing listens: tests point it at a fake
        secret_key="test-secret",
        # Unsigned webhooks and streams (the tests that check signatures set a token); the API
        # without a token answers because the test servers listen on loopback only.
        twilio_signature_check=False,
        host="127.0.0.1",
        log_level="INFO",
        timing=CallTiming(session_update_retry_s=3.0, session_update_timeout_s=8.0),
        # The tests count and index the fake's connections per call; the pool's own tests
        # (tests/test_realtime_pool.py) and the gunicorn ones turn it on.
        realtime_pool_size=0,
    )


@pytest.fixture
def db(settings) -> Database:
    """The test's database, migrated, without a server."""
    database = Database(settings.database_url)
    database.upgrade()
    yield database
    database.dispose()


def start_live_server(settings: Settings) -> tuple[LiveServer, object]:
    app = create_app(settings)
    app.extensions["db"].upgrade()
    server = make_server(app, "127.0.0.1", 0)
    server.start()
    return LiveServer(app=app, host="127.0.0.1", port=server.server_port), server


@pytest.fixture
def make_live_server():
    """Start a server for given settings; all are stopped after the test."""
    started = []

    def start(settings: Settings) -> LiveServer:
        live, server = start_live_server(settings)
        started.append((live, server))
        return live

    yield start
    for live, server in started:
        live.app.extensions["realtime_pool"].close()  # its filler would connect to a fake already gone
        server.stop(timeout=2)
        live.db.dispose()


@pytest.fixture
def live_server(make_live_server, settings) -> LiveServer:
    return make_live_server(settings)


def add_business(live: LiveServer, number: str = BUSINESS_NUMBER, **fields) -> int:
    values = dict(name="מספרת הבדיקה", greeting="שלום, הגעתם למספרת הבדיקה, איך אפשר לעזור?",
                  business_prompt="מספרה בתל אביב.", voice="alloy")
    values.update(fields)
    with live.db.session() as session:
        business = Business(**values)
        business.phone_numbers.append(PhoneNumber(e164=number))
        session.add(business)
        session.flush()
        return business.id


@pytest.fixture
def business_id(live_server) -> int:
    return add_business(live_server)


__all__ = ["LiveServer", "add_business", "dataclasses", "gevent", "BUSINESS_NUMBER", "CALLER_NUMBER"]


# --- the fakes: a Realtime API and a Twilio caller (tests/fakes) ---------------------

from tests.fakes.realtime_server import FakeRealtime, RealtimeScript  # noqa: E402
from tests.fakes.twilio_caller import FakeTwilioCall  # noqa: E402
from tests.fakes.twilio_rest import FakeTwilioRest  # noqa: E402


@pytest.fixture
def twilio_rest():
    """The fake Twilio REST API (a test that needs more of it defines its own)."""
    fake = FakeTwilioRest().start()
    yield fake
    fake.stop()


@pytest.fixture
def make_fake_realtime():
    """Start a fake Realtime API for a script; all are stopped after the test."""
    started = []

    def start(script: RealtimeScript | None = None) -> FakeRealtime:
        fake = FakeRealtime(script).start()
        started.append(fake)
        return fake

    yield start
    for fake in started:
        fake.stop()


@pytest.fixture
def fake_realtime(make_fake_realtime) -> FakeRealtime:
    return make_fake_realtime()


@pytest.fixture
def make_twilio_call():
    """Connect a fake Twilio caller to a media websocket; any still open hang up after the test."""
    calls = []

    def connect(media_ws_url: str, call_sid: str, parameters=None, **options) -> FakeTwilioCall:
        call = FakeTwilioCall(media_ws_url, call_sid, parameters, **options).start()
        calls.append(call)
        return call

    yield connect
    for call in calls:
        call.stop(timeout=1)


def pytest_collection_modifyitems(config, items):
    """On PostgreSQL, only the tests that have a database: the others would run as they did on
    SQLite, and the second run is there for the database."""
    if not databases.is_postgres():
        return
    kept = [item for item in items if "database_url" in getattr(item, "fixturenames", ())]
    if len(kept) < len(items):
        config.hook.pytest_deselected(items=[item for item in items if item not in kept])
        items[:] = kept
