"""The per-frame socket calls: `sendall` writes all bytes, in order, whether the kernel takes them
at once or not; `recv` reads what comes, whenever it comes, and ends when the socket does."""
import socket
import ssl

import gevent

from services.fast_socket import recv_of, sendall_of


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


def test_recv_reads_what_was_there_and_waits_for_what_comes_later():
    a, b = socket.socketpair()
    recv = recv_of(b)
    assert recv != b.recv  # the fast path, on a plain gevent socket
    a.sendall(b"first")
    assert recv(65536) == b"first"
    gevent.spawn_later(0.05, a.sendall, b"later")
    with gevent.Timeout(5, AssertionError("the later bytes never came")):
        assert recv(65536) == b"later"
    a.close()
    assert recv(65536) == b""  # the peer closed: end of stream, as recv says it


def test_recv_waits_cooperatively_and_a_close_from_another_greenlet_ends_it():
    a, b = socket.socketpair()
    reader = gevent.spawn(recv_of(b), 65536)
    gevent.sleep(0.05)
    assert not reader.ready()  # waiting, and this greenlet still runs
    b.close()
    with gevent.Timeout(5, AssertionError("the close did not end the read")):
        reader.join()
    assert isinstance(reader.exception, OSError)
    a.close()


def test_recv_ignores_the_sockets_timeout():
    a, b = socket.socketpair()
    b.settimeout(0.01)
    gevent.spawn_later(0.1, a.sendall, b"late")
    with gevent.Timeout(5, AssertionError("never read")):
        assert recv_of(b)(65536) == b"late"
    a.close()
    b.close()


def test_a_tls_socket_keeps_its_own_recv():
    context = ssl.create_default_context()
    tls = context.wrap_socket(socket.socket(), server_hostname="example.org", do_handshake_on_connect=False)
    assert recv_of(tls) == tls.recv
    tls.close()
