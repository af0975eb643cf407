"""The Twilio Media Streams websocket: authenticate the stream, then hand it to a CallSession."""
from __future__ import annotations

import logging
from urllib.parse import urlsplit

import gevent
from flask import Blueprint, Flask, abort, current_app, g, request
from flask_sock import Sock
from sqlalchemy import bindparam, update

from server.security import NO_TOKEN_HINT, StreamToken, host_name, twilio_signature_valid
from server.stream_parameters import CONSOLE_QUERY, MEDIA_PATH, BadStreamParameters, StreamParameters
from services import twilio_protocol as tw
from services.call_session import CallServices, CallSession, CallSetup
from services.realtime_client import RealtimeConnection
from services.store.end_reasons import EndReason
from services.store.models import Call, utcnow
from services.twilio_socket import SimpleWebsocketAdapter, SocketClosed, TwilioSocket

bp = Blueprint("media", __name__)
sock = Sock()
log = logging.getLogger("media")

# Twilio sends `connected` and `start` first; a peer that does not, in all, within this
# time and this many frames is not Twilio: it holds a socket and a greenlet for nothing.
START_TIMEOUT_S = 5.0
MAX_FRAMES_BEFORE_START = 5


@bp.before_request
def _check_upgrade_signature() -> None:
    """Twilio signs the upgrade request like a webhook; refuse before accepting the socket.
    The console's page (Talk to your agent, `?from=console`) cannot sign: it must be of the
    console's own origin, and may open a test call only, with the test token its `start` carries
    (`_authorise`)."""
    settings = current_app.config["SETTINGS"]
    SimpleWebsocketAdapter.decline_extensions(request.environ)
    g.browser_stream = request.args.get(CONSOLE_QUERY[0]) == CONSOLE_QUERY[1]
    if g.browser_stream:
        origin = request.headers.get("Origin", "")
        if not _same_origin(origin, settings):
            log.warning("rejected media stream: the console's page of another origin", extra={"origin": origin[:200]})
            abort(403, "the page is not of this server's origin")
        return
    if not settings.twilio_auth_token:
        if settings.unsigned_twilio_allowed:
            g.from_twilio = True
            return
        log.warning(f"rejected media stream: no TWILIO_AUTH_TOKEN; {NO_TOKEN_HINT}")
        abort(403, f"Twilio signature checking is not configured: {NO_TOKEN_HINT}")
    host = urlsplit(settings.public_base_url).netloc if settings.public_base_url else request.host
    signature = request.headers.get("X-Twilio-Signature")
    # The stream URL in our TwiML is wss://; accept the https:// form some proxies present.
    if not any(twilio_signature_valid(settings.twilio_auth_token, f"{scheme}://{host}{MEDIA_PATH}", {}, signature)
               for scheme in ("wss", "https")):
        log.warning("rejected media stream: bad or missing X-Twilio-Signature")
        abort(403, "invalid Twilio signature")
    g.from_twilio = True


def _same_origin(origin: str, settings) -> bool:
    """The page that opens the socket is the console's own (a browser always says whose): its
    origin is the Host it asks (an allowed one), or the public address."""
    netloc = urlsplit(origin).netloc.lower()
    if not netloc or host_name(request.host) not in settings.api_hosts:
        return False
    public = urlsplit(settings.public_base_url).netloc.lower() if settings.public_base_url else None
    return netloc in (request.host.lower(), public)


@sock.route(MEDIA_PATH, bp=bp)
def twilio_media(ws) -> None:
    twilio = TwilioSocket(ws)
    settings = current_app.config["SETTINGS"]
    realtime = None
    if g.get("from_twilio") and not current_app.extensions["live_calls"].closed:
        # Twilio's upgrade is followed by `start` within milliseconds, and the call is then all
        # but certain: a connection opened ahead of it, or one opened now (either closed again
        # if `start` fails).
        realtime = current_app.extensions["realtime_pool"].take(settings.realtime_ws_url)
        if realtime is None:
            realtime = RealtimeConnection(settings.realtime_ws_url, settings.openai_api_key,
                                          settings.timing.realtime_connect_timeout_s)
            realtime.open_early()
    try:
        setup = _await_start(twilio)
        if setup is None:
            twilio.close(1008, "stream not authorised")
            return
        if current_app.extensions["live_calls"].closed:
            _refuse_while_stopping(twilio, setup)
            return
        gevent.sleep(0)  # audio of the live calls waiting on this loop goes first (a yield between steps)
        services = CallServices(db=current_app.extensions["db"], settings=settings,
                                live_calls=current_app.extensions["live_calls"],
                                journal=current_app.extensions["journal"],
                                call_watch=current_app.extensions["call_watch"],
                                realtime_pool=current_app.extensions["realtime_pool"])
        CallSession(services, twilio, setup, realtime).run()
    except SocketClosed:
        pass
    except Exception:
        # Anything escaping would make Flask write an HTTP 500 into the open websocket.
        log.exception("media stream failed")
        twilio.close(1011, "internal error")
    finally:
        if realtime is not None:
            realtime.close()  # the session closed it already, unless there was none


def _refuse_while_stopping(twilio: TwilioSocket, setup: CallSetup) -> None:
    """The process is shutting down: no Realtime session for a new stream. Twilio then asks
    /webhook/stream_ended (another process) what next, so the row says why first, then the socket
    closes."""
    log.warning("stream refused: the server is shutting down", extra={"call_sid": setup.call_sid})
    try:
        with current_app.extensions["db"].session() as session:
            session.execute(update(Call).where(Call.call_sid == setup.call_sid, Call.end_reason.is_(None))
                            .values(end_reason=EndReason.SHUTDOWN).execution_options(synchronize_session=False))
    finally:
        twilio.close(1001, "server shutting down")


def _await_start(twilio: TwilioSocket) -> CallSetup | None:
    """Read frames until `start`; return the call's setup if its token is good."""
    settings = current_app.config["SETTINGS"]
    # One deadline for them all: the socket's own timeout is per read, and a peer trickling
    # bytes would reset it with each one.
    with gevent.Timeout(START_TIMEOUT_S, False):
        for _ in range(MAX_FRAMES_BEFORE_START):
            message = twilio.receive()
            try:
                event = tw.parse_frame(message)
            except tw.FrameError as exc:
                log.warning("dropped malformed frame before start", extra={"reason": exc.reason})
                continue
            if isinstance(event, tw.Start):
                return _authorise(event, settings)
            if not isinstance(event, tw.Connected):
                log.warning("frame before start dropped", extra={"event": type(event).__name__})
        log.warning("no start frame", extra={"frames": MAX_FRAMES_BEFORE_START})
        return None
    log.warning("no start frame within the time allowed", extra={"timeout_s": START_TIMEOUT_S})
    return None


def _authorise(start: tw.Start, settings) -> CallSetup | None:
    """The call's setup if the stream's parameters are the webhook's (or, for a test call, the
    console's), vouched for by its token."""
    try:
        params = StreamParameters.from_start(start.call_sid, start.parameters)
        problem = StreamToken(params.token_key(settings.secret_key)).verify(params.signed_text(),
                                                                           start.parameters.get("token"))
    except BadStreamParameters as exc:
        problem = str(exc)
    if problem is None and g.browser_stream and not params.test:
        problem = "the console's page may open a test call only"
    if problem is None and not _claim_stream(params.call_sid, params.test, params.resumed):
        problem = "the call's stream token was already used (or the call is unknown)"
    if problem is not None:
        log.warning("stream refused", extra={"call_sid": start.call_sid, "why": problem})
        return None
    return CallSetup(call_sid=params.call_sid, stream_sid=start.stream_sid, business_id=params.business_id,
                     direction=params.direction, from_number=params.from_number, to_number=params.to_number,
                     is_test=params.test, resumed=params.resumed)


def _claim_statement(is_test: bool, resumed: bool):
    after_transfer = Call.transfer_status.is_not(None) if resumed else Call.transfer_status.is_(None)
    return (update(Call.__table__)
            .where(Call.call_sid == bindparam("claimed_sid"), Call.stream_claimed_at.is_(None),
                   Call.is_test.is_(is_test), after_transfer)
            .values(stream_claimed_at=bindparam("claimed_at")))


# Built once (by test token and by resumed stream): a statement built per call is keyed and
# compiled anew, on the loop every call shares.
_CLAIMS = {(is_test, resumed): _claim_statement(is_test, resumed) for is_test in (False, True) for resumed in (False, True)}


def _claim_stream(call_sid: str, is_test: bool, resumed: bool) -> bool:
    """Mark the call's row as streamed; False when another stream did first. One conditional
    UPDATE, committed before the call starts: the database decides between workers and hosts.
    (`stream_sid` will not do: the call's journal writes it later, asynchronously.) A test
    token claims a test call's row only. A call back from a transfer no one took is open to a
    `resumed` stream only: its first stream's token, good for a while yet, claims nothing
    (services/warm_transfer.py)."""
    with current_app.extensions["db"].session() as session:
        result = session.connection().execute(_CLAIMS[is_test, resumed],
                                              {"claimed_sid": call_sid, "claimed_at": utcnow()})
        return result.rowcount == 1


def init_app(app: Flask) -> None:
    app.config["SOCK_SERVER_OPTIONS"] = SimpleWebsocketAdapter.SERVER_OPTIONS
    app.register_blueprint(bp)
