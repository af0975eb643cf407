"""A Realtime peer that stops reading (a network black hole) cannot hang a call.

The fake peer here is a raw TCP server: a websocket handshake, `session.updated` for each
`session.update`, and then, on its first connection, it reads nothing more while the caller's
audio keeps coming. The server's writes fill the socket and block; a write that cannot complete
within the socket's timeout loses the session, which is opened again on the peer's second
connection (that one reads everything), and the call goes on and is stored. The liveness
watch's pings are put off beyond the test, so that only the bounded write can save the call.
"""
import dataclasses
import json
import socket

import gevent
from gevent.server import StreamServer

from bench.realtime_peer import PATH
from bench.ws_handshake import read_request, server_accept
from services import ws_frames
from tests.fakes.waiting import wait_for
from tests.harness import TEST_TIMING

PATIENT_WATCH = dataclasses.replace(TEST_TIMING, realtime_ping_after_s=120.0, realtime_pong_timeout_s=120.0,
                                    response_stall_s=120.0, twilio_idle_s=120.0)


class BlackHolePeer:
    """Connection 1 stops reading once the session is confirmed; later ones read (and drop) all."""

    def __init__(self):
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # inherited: a small window
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        self.connections: list[socket.socket] = []
        self.stopped_reading = False
        self.audio_after_reconnect = 0  # caller frames a later connection got after its session.updated
        self._server = StreamServer(listener, self._serve)

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self._server.server_port}{PATH}"

    def start(self) -> "BlackHolePeer":
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop(timeout=1)

    def _serve(self, sock: socket.socket, _address) -> None:
        self.connections.append(sock)
        first = len(self.connections) == 1
        request = read_request(sock)
        if request is None:
            return
        _target, headers, rest = request
        server_accept(sock, headers)
        decoder = ws_frames.FrameDecoder()
        decoder.feed(rest)
        try:
            while True:
                frame = decoder.next()
                if frame is None:
                    data = sock.recv(65536)
                    if not data:
                        return
                    decoder.feed(data)
                    continue
                opcode, payload = frame
                if opcode == ws_frames.OP_CLOSE:
                    return
                kind = json.loads(payload)["type"] if opcode == ws_frames.OP_TEXT else None
                if not first and kind == "input_audio_buffer.append":
                    self.audio_after_reconnect += 1
                if kind == "session.update":
                    sock.sendall(ws_frames.text_frame(json.dumps({"type": "session.updated", "session": {}})))
                    if first:
                        self.stopped_reading = True
                        gevent.sleep(60)  # hold the socket open, reading nothing
                        return
        except OSError:
            return


def test_a_peer_that_stops_reading_loses_the_session_and_the_call_goes_on_and_is_stored(make_harness):
    peer = BlackHolePeer().start()
    try:
        h = make_harness(realtime_url=peer.url, timing=PATIENT_WATCH)
        caller = h.call()
        wait_for(lambda: peer.stopped_reading, 5, message="the peer to stop reading")
        # The caller's audio fills the socket; the stuck write gives up within its timeout.
        wait_for(lambda: len(peer.connections) == 2, 30, message="a second connection")
        # Resumed once the new session is confirmed: the caller's audio flows on it.
        wait_for(lambda: peer.audio_after_reconnect > 0, 10, message="the caller's audio on the new session")
        caller.stop()
        stored = h.wait_ended(caller.call_sid, timeout=10)
        assert stored.row.end_reason == "caller_hangup"
        assert stored.row.metrics["realtime_reconnects"] == 1
    finally:
        peer.stop()
