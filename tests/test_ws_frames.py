"""The frame codec against independent implementations: our decoder reads websocket-client's
frames, our encoder writes RFC 6455's example bytes and what websocket-client writes and reads;
and the media socket's use of simple-websocket (`SimpleWebsocketAdapter`) against the library."""
import io
import socket

import gevent
import pytest
from simple_websocket import ConnectionClosed, Server
from websocket import ABNF
from websocket._abnf import frame_buffer

from services import ws_frames
from services.twilio_socket import SimpleWebsocketAdapter, SocketClosed, TwilioSocket
from services.ws_frames import FrameDecoder, FrameProtocolError


def client_frame(payload: bytes, opcode=ABNF.OPCODE_TEXT, fin=1) -> bytes:
    return ABNF(fin=fin, opcode=opcode, mask_value=1, data=payload).format()


@pytest.mark.parametrize("size", [0, 1, 125, 126, 300, 65535, 65536, 200_000])
def test_masked_messages_of_every_length_class_come_back_whole(size):
    payload = bytes(i % 251 for i in range(size))
    decoder = FrameDecoder()
    decoder.feed(client_frame(payload, ABNF.OPCODE_BINARY))
    assert decoder.next() == (ws_frames.OP_BINARY, payload)
    assert decoder.next() is None


def test_bytes_arriving_in_pieces_and_several_frames_in_one_read():
    data = client_frame(b'{"event":"media"}') + client_frame(b'{"event":"stop"}')
    decoder = FrameDecoder()
    for i in range(len(data) - 5):
        decoder.feed(data[i:i + 1])
        if i < 10:
            assert decoder.next() is None
    decoder.feed(data[len(data) - 5:])
    assert decoder.next() == (ws_frames.OP_TEXT, b'{"event":"media"}')
    assert decoder.next() == (ws_frames.OP_TEXT, b'{"event":"stop"}')


def test_fragments_are_joined_and_control_frames_may_come_between():
    decoder = FrameDecoder()
    decoder.feed(client_frame(b"hello ", fin=0) + client_frame(b"", ABNF.OPCODE_PING)
                 + client_frame(b"world", ABNF.OPCODE_CONT))
    assert decoder.next() == (ws_frames.OP_PING, b"")
    assert decoder.next() == (ws_frames.OP_TEXT, b"hello world")


@pytest.mark.parametrize("data, code", [
    (bytes((0x81, 0x03)) + b"abc", 1002),  # not masked
    (bytes((0xC1, 0x80)) + b"\0\0\0\0", 1002),  # reserved bit without an extension
    (client_frame(b"x", ABNF.OPCODE_CONT), 1002),  # continuation of nothing
    (client_frame(b"x" * 200, ABNF.OPCODE_PING), 1002),  # oversized control frame
])
def test_protocol_violations_name_their_close_code(data, code):
    decoder = FrameDecoder()
    decoder.feed(data)
    with pytest.raises(FrameProtocolError) as caught:
        decoder.next()
    assert caught.value.code == code


def test_a_message_over_the_limit_is_refused_before_it_is_buffered():
    decoder = FrameDecoder(max_message=1000)
    decoder.feed(client_frame(b"x" * 2000)[:20])
    with pytest.raises(FrameProtocolError) as caught:
        decoder.next()
    assert caught.value.code == 1009


# --- the encoder, against RFC 6455's own examples and websocket-client's codec ------------

# RFC 6455, section 5.7; the masking key of the masked examples is 0x37fa213d.
RFC_KEY = bytes.fromhex("37fa213d")


@pytest.mark.parametrize("frame, expected", [
    (lambda: ws_frames.text_frame("Hello"), "810548656c6c6f"),  # a single-frame unmasked text message
    (lambda: ws_frames.masked_text_frame("Hello", RFC_KEY), "818537fa213d7f9f4d5158"),  # the same, masked
    (lambda: ws_frames.masked_text_frame(b"Hello", RFC_KEY), "818537fa213d7f9f4d5158"),  # given as UTF-8
    (lambda: ws_frames.encode(ws_frames.OP_PING, b"Hello"), "890548656c6c6f"),  # unmasked ping
    (lambda: ws_frames.encode(ws_frames.OP_PONG, b"Hello", RFC_KEY), "8a8537fa213d7f9f4d5158"),  # masked pong
])
def test_frames_are_byte_for_byte_the_rfcs_examples(frame, expected):
    assert frame() == bytes.fromhex(expected)


@pytest.mark.parametrize("size, header", [(256, "827e0100"), (65536, "827f0000000000010000")])
def test_long_binary_frames_have_the_rfcs_length_headers(size, header):
    payload = bytes(i % 256 for i in range(size))  # "256 bytes binary message in a single unmasked frame", and 64 KiB
    assert ws_frames.encode(ws_frames.OP_BINARY, payload) == bytes.fromhex(header) + payload


def _library_frame(opcode: int, payload: bytes, key: bytes | None) -> bytes:
    frame = ABNF(fin=1, opcode=opcode, mask_value=int(key is not None), data=payload)
    frame.get_mask_key = lambda length: key
    return frame.format()


def _library_reads(data: bytes) -> list[ABNF]:
    """websocket-client's own frame reader over `data` (it unmasks and validates each frame)."""
    stream = io.BytesIO(data)
    reader = frame_buffer(stream.read, skip_utf8_validation=False)
    frames = []
    while stream.tell() < len(data):
        frames.append(reader.recv_frame())
    return frames


SIZES = [0, 1, 125, 126, 300, 65535, 65536, 200_000]


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("key", [None, b"\x01\x02\x03\x04", RFC_KEY], ids=["server", "client", "rfc-key"])
def test_our_frames_are_websocket_clients_bytes_and_read_back_by_it(size, key):
    payload = bytes(i % 251 for i in range(size))
    ours = ws_frames.encode(ws_frames.OP_BINARY, payload, key)
    assert ours == _library_frame(ABNF.OPCODE_BINARY, payload, key)
    [frame] = _library_reads(ours)
    assert (frame.fin, frame.opcode, frame.mask_value, frame.data) == (1, ABNF.OPCODE_BINARY, int(key is not None),
                                                                       payload)


def test_text_and_close_frames_read_back_by_websocket_client():
    key = b"\x0a\x0b\x0c\x0d"
    text = "שלום " * 40
    stream = (ws_frames.text_frame(text) + ws_frames.masked_text_frame('{"type":"response.create"}', key)
              + ws_frames.close_frame(1008, "stream not authorised") + ws_frames.close_frame(1000, "bye", key=key)
              + ws_frames.close_frame(1011, "x" * 300))
    frames = _library_reads(stream)
    assert [(f.opcode, f.mask_value) for f in frames] == [(ABNF.OPCODE_TEXT, 0), (ABNF.OPCODE_TEXT, 1),
                                                          (ABNF.OPCODE_CLOSE, 0), (ABNF.OPCODE_CLOSE, 1),
                                                          (ABNF.OPCODE_CLOSE, 0)]
    assert frames[0].data.decode() == text and frames[1].data == b'{"type":"response.create"}'
    assert frames[2].data == (1008).to_bytes(2, "big") + b"stream not authorised"
    assert frames[3].data == (1000).to_bytes(2, "big") + b"bye"
    assert frames[4].data == (1011).to_bytes(2, "big") + b"x" * 120, "a long reason is cut to fit a control frame"


@pytest.mark.parametrize("size", [0, 125, 126, 65535, 65536, 200_000])
def test_a_client_reads_websocket_client_server_frames_of_every_length_class(size):
    payload = bytes(i % 251 for i in range(size))
    decoder = FrameDecoder(masked=False)
    decoder.feed(_library_frame(ABNF.OPCODE_BINARY, payload, None) + _library_frame(ABNF.OPCODE_TEXT, b"next", None))
    assert decoder.next() == (ws_frames.OP_BINARY, payload)
    assert decoder.next() == (ws_frames.OP_TEXT, b"next")
    assert decoder.next() is None


def test_a_client_refuses_a_masked_frame_and_a_server_an_unmasked_one():
    for decoder, data in ((FrameDecoder(masked=False), client_frame(b"x")),
                          (FrameDecoder(), _library_frame(ABNF.OPCODE_TEXT, b"x", None))):
        decoder.feed(data)
        with pytest.raises(FrameProtocolError) as caught:
            decoder.next()
        assert caught.value.code == 1002


# --- simple-websocket, as SimpleWebsocketAdapter uses it ---------------------------------


def accepted_pair():
    """A simple-websocket Server over one end of a socket pair (as Flask-Sock builds it under
    gunicorn), with the adapter's options; the other end is the client, handshake answer read."""
    server_end, client_end = socket.socketpair()
    environ = {"gunicorn.socket": server_end, "HTTP_HOST": "test", "HTTP_UPGRADE": "websocket",
               "HTTP_CONNECTION": "Upgrade", "HTTP_SEC_WEBSOCKET_KEY": "dGhlIHNhbXBsZSBub25jZQ==",
               "HTTP_SEC_WEBSOCKET_VERSION": "13"}
    ws = Server(environ, **SimpleWebsocketAdapter.SERVER_OPTIONS)
    answer = b""
    while b"\r\n\r\n" not in answer:
        answer += client_end.recv(4096)
    assert answer.startswith(b"HTTP/1.1 101")
    return ws, client_end


def test_the_library_leaves_every_frame_to_us_and_writes_nothing_after_our_close():
    ws, client = accepted_pair()
    twilio = TwilioSocket(ws)
    client.sendall(client_frame(b'{"event":"connected"}') + client_frame(b"", ABNF.OPCODE_PING))
    gevent.sleep(0.05)  # a library reader, had one started, would take the frames now
    assert twilio.receive(timeout=0.5) == '{"event":"connected"}'
    twilio.close(1000)
    # Flask-Sock closes the library's socket after the handler: that must add nothing.
    with pytest.raises(ConnectionClosed):
        ws.close()
    received = b""
    while chunk := client.recv(4096):
        received += chunk
    assert received == ws_frames.close_frame(1000)
    with pytest.raises(SocketClosed):
        twilio.send("late")


# --- hostile input: only FrameProtocolError escapes ---------------------------------------

from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402

PROPERTY = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _drain(decoder):
    messages = []
    while (message := decoder.next()) is not None:
        messages.append(message)
    return messages


@PROPERTY
@given(st.binary(max_size=4096), st.booleans())
def test_any_bytes_give_messages_or_a_protocol_error(data, masked):
    decoder = FrameDecoder(max_message=2048, masked=masked)
    decoder.feed(data)
    try:
        for opcode, payload in _drain(decoder):
            assert opcode in (ws_frames.OP_TEXT, ws_frames.OP_BINARY, ws_frames.OP_CLOSE, ws_frames.OP_PING,
                              ws_frames.OP_PONG)
            assert isinstance(payload, bytes) and len(payload) <= 2048
    except FrameProtocolError as exc:
        assert exc.code in (1002, 1009)


# One message: (opcode, its fragments' payloads); a control frame may sit between fragments.
message_strategy = st.tuples(st.sampled_from([ABNF.OPCODE_TEXT, ABNF.OPCODE_BINARY]),
                             st.lists(st.binary(max_size=300), min_size=1, max_size=4),
                             st.booleans())


@PROPERTY
@given(st.lists(message_strategy, min_size=1, max_size=6), st.data())
def test_a_valid_stream_cut_anywhere_gives_the_same_messages(messages, data):
    stream = b""
    for opcode, fragments, ping_between in messages:
        for index, fragment in enumerate(fragments):
            stream += client_frame(fragment, opcode if index == 0 else ABNF.OPCODE_CONT,
                                   fin=int(index == len(fragments) - 1))
            if ping_between and index == 0:
                stream += client_frame(b"ping", ABNF.OPCODE_PING)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=12)))
    decoder = FrameDecoder()
    received = []
    for start, end in zip([0] + cuts, cuts + [len(stream)]):
        decoder.feed(stream[start:end])
        received.extend(_drain(decoder))
    assert received == list(_in_send_order(messages))


def _in_send_order(messages):
    """A ping after a message's first fragment comes before the message, unless that fragment was its last."""
    for opcode, fragments, ping_between in messages:
        if ping_between and len(fragments) > 1:
            yield ws_frames.OP_PING, b"ping"
            yield opcode, b"".join(fragments)
        else:
            yield opcode, b"".join(fragments)
            if ping_between:
                yield ws_frames.OP_PING, b"ping"


def test_a_reserved_control_opcode_is_a_protocol_error():
    decoder = FrameDecoder()
    decoder.feed(ws_frames.encode(0xB, b"", key=b"\x01\x02\x03\x04"))
    with pytest.raises(FrameProtocolError) as caught:
        decoder.next()
    assert caught.value.code == 1002


def test_a_message_in_too_many_fragments_is_refused():
    decoder = FrameDecoder()
    decoder.feed(client_frame(b"x", ABNF.OPCODE_TEXT, fin=0)
                 + client_frame(b"x", ABNF.OPCODE_CONT, fin=0) * (ws_frames.MAX_FRAGMENTS + 1))
    with pytest.raises(FrameProtocolError) as caught:
        decoder.next()
    assert caught.value.code == 1009


def test_a_long_hebrew_close_reason_is_cut_at_a_characters_edge():
    frame = ws_frames.close_frame(1008, "הזרם לא אושר " * 10)
    payload = frame[2:]  # unmasked, under 126 bytes: a two-byte header
    assert len(payload) <= 125
    reason = payload[2:].decode()  # valid UTF-8, or this raises
    assert reason and ("הזרם לא אושר " * 10).startswith(reason)
