"""The per-frame `sendall`: all bytes, in order, whether the kernel takes them at once or not."""
import socket
import ssl

import gevent

from services.socket_send import sendall_of


def _pair():
    a, b = socket.socketpair()
    a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    b.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    return a, b


def _read(sock, size):
    got = bytearray()
    with gevent.Timeout(5, AssertionError(f"fewer than {size} bytes came within 5 s")):
        while len(got) < size:
            chunk = sock.recv(65536)
            assert chunk, "closed early"
            got += chunk
    return bytes(got)


def test_a_frame_the_kernel_takes_at_once_arrives_whole():
    a, b = socket.socketpair()  # the kernel's buffers: room for these frames
    send = sendall_of(a)
    assert send != a.sendall  # the fast path, on a plain gevent socket
    for i in range(20):
        send(bytes([i]) * 300)
    assert _read(b, 20 * 300) == b"".join(bytes([i]) * 300 for i in range(20))


def test_more_than_the_send_buffer_waits_for_the_reader_and_keeps_the_order():
    a, b = _pair()
    data = bytes(range(256)) * 4096  # 1 MiB: far past the buffers, so the kernel takes a part
    sender = gevent.spawn(sendall_of(a), data)
    gevent.sleep(0.05)
    assert not sender.ready()  # waiting for room, cooperatively: this greenlet still runs
    assert _read(b, len(data)) == data
    sender.get(timeout=5)


def test_a_full_buffer_past_the_sockets_timeout_raises_as_sendall_does():
    a, b = _pair()
    a.settimeout(0.1)
    try:
        sendall_of(a)(b"x" * (4 << 20))
    except socket.timeout:
        pass
    else:
        raise AssertionError("a write nobody reads must time out")


def test_a_tls_socket_keeps_its_own_sendall():
    context = ssl.create_default_context()
    raw = socket.socket()
    tls = context.wrap_socket(raw, server_hostname="example.org", do_handshake_on_connect=False)
    assert sendall_of(tls) == tls.sendall
    tls.close()
