"""The Twilio Media Streams websocket: authenticate the stream, then hand it to a CallSession."""
from __future__ import annotations

import logging
from urllib.parse import urlsplit

from flask import Blueprint, Flask, abort, current_app, request
from flask_sock import Sock

from server.security import StreamToken, twilio_signature_valid
from services import twilio_protocol as tw
from services.call_session import CallServices, CallSession, CallSetup
from services.twilio_socket import SimpleWebsocketAdapter, SocketClosed, TwilioSocket

bp = Blueprint("media", __name__)
sock = Sock()
log = logging.getLogger("media")

MEDIA_PATH = "/ws/twilio-media"
# Twilio sends `connected` and `start` first; a peer that does not within this is not Twilio.
START_TIMEOUT_S = 10.0
MAX_FRAMES_BEFORE_START = 50


@bp.before_request
def _check_upgrade_signature() -> None:
    """Twilio signs the upgrade request like a webhook; refuse before accepting the socket."""
    settings = current_app.config["SETTINGS"]
    if not settings.twilio_auth_token:
        return
    host = urlsplit(settings.public_base_url).netloc if settings.public_base_url else request.host
    signature = request.headers.get("X-Twilio-Signature")
    # The stream URL in our TwiML is wss://; accept the https:// form some proxies present.
    if not any(twilio_signature_valid(settings.twilio_auth_token, f"{scheme}://{host}{MEDIA_PATH}", {}, signature)
               for scheme in ("wss", "https")):
        log.warning("rejected media stream: bad or missing X-Twilio-Signature")
        abort(403, "invalid Twilio signature")


@sock.route(MEDIA_PATH, bp=bp)
def twilio_media(ws) -> None:
    twilio = TwilioSocket(ws)
    try:
        setup = _await_start(twilio)
        if setup is None:
            twilio.close(1008, "stream not authorised")
            return
        services = CallServices(db=current_app.extensions["db"], settings=current_app.config["SETTINGS"],
                                live_calls=current_app.extensions["live_calls"],
                                journal=current_app.extensions["journal"])
        CallSession(services, twilio, setup).run()
    except SocketClosed:
        pass
    except Exception:
        # Anything escaping would make Flask write an HTTP 500 into the open websocket.
        log.exception("media stream failed")
        twilio.close(1011, "internal error")


def _await_start(twilio: TwilioSocket) -> CallSetup | None:
    """Read frames until `start`; return the call's setup if its token is good."""
    settings = current_app.config["SETTINGS"]
    for _ in range(MAX_FRAMES_BEFORE_START):
        message = twilio.receive(timeout=START_TIMEOUT_S)
        if message is None:
            log.warning("no start frame within the time allowed", extra={"timeout_s": START_TIMEOUT_S})
            return None
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


def _authorise(start: tw.Start, settings) -> CallSetup | None:
    params = start.parameters
    call_sid = start.call_sid
    problem = StreamToken(settings.secret_key).verify(call_sid, params.get("token"))
    if problem is None and params.get("call_sid") not in (None, call_sid):
        problem = "call_sid parameter does not match the stream"
    business_id = params.get("business_id", "")
    if problem is None and not business_id.isdigit():
        problem = "no business_id parameter"
    if problem is not None:
        log.warning("stream refused", extra={"call_sid": call_sid, "why": problem})
        return None
    direction = params.get("direction") if params.get("direction") in ("inbound", "outbound") else "inbound"
    return CallSetup(call_sid=call_sid, stream_sid=start.stream_sid, business_id=int(business_id),
                     direction=direction, from_number=params.get("from", ""), to_number=params.get("to", ""))


def init_app(app: Flask) -> None:
    app.config["SOCK_SERVER_OPTIONS"] = SimpleWebsocketAdapter.SERVER_OPTIONS
    app.register_blueprint(bp)
