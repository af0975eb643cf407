"""Hostile requests are refused cleanly, over HTTP and the media socket against a live server:
bodies over the limits unread (413), control characters in text (422), deep JSON (400), and
a media peer that never sends `start`."""
import json
import socket
import time

import pytest
import requests
import websocket

from server.routes import media


def _headers_only(live, path, content_type, length):
    """Send a request's headers announcing `length` bytes, and none of the body: a server that
    reads the body before answering would wait; one that refuses it unread answers now."""
    with socket.create_connection((live.host, live.port), timeout=5) as conn:
        conn.sendall((f"POST {path} HTTP/1.1\r\nHost: {live.host}\r\nContent-Type: {content_type}\r\n"
                      f"Content-Length: {length}\r\nConnection: close\r\n\r\n").encode())
        answer = b""
        # Up to the answer's own end: the server may keep the connection for the body never sent.
        while b"\r\n\r\n" not in answer or len(answer.partition(b"\r\n\r\n")[2]) < _length(answer):
            chunk = conn.recv(65536)
            if not chunk:
                break
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


def _length(answer: bytes) -> int:
    for line in answer.partition(b"\r\n\r\n")[0].split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    return 0


def test_an_api_body_over_a_mebibyte_is_refused_unread(live_server):
    status, body = _headers_only(live_server, "/api/businesses", "application/json", 2_000_000)
    assert status == 413
    assert "error" in json.loads(body)


def test_a_whole_two_megabyte_api_body_is_a_413(live_server):
    response = requests.post(f"{live_server.base_url}/api/businesses", data=b"x" * 2_000_000,
                             headers={"Content-Type": "application/json"}, timeout=10)
    assert response.status_code == 413
    assert "error" in response.json()


def test_a_webhook_form_over_64_kib_is_refused_unread(live_server):
    status, _ = _headers_only(live_server, "/webhook/incoming_call", "application/x-www-form-urlencoded", 100_000)
    assert status == 413
    response = requests.post(f"{live_server.base_url}/webhook/incoming_call",
                             data={"CallSid": "CA1", "Junk": "x" * 100_000}, timeout=5)
    assert response.status_code == 413


def test_a_webhook_form_without_a_length_is_not_read_past_the_limit(live_server):
    # gunicorn hands a chunked body on (wsgi.input_terminated), and it stops at the limit: 413;
    # the test server hands on none of it, so the form is empty: 400. Never a 500, never read whole.
    chunks = (b"Junk=" + b"x" * 10_000 if i == 0 else b"x" * 10_000 for i in range(10))
    response = requests.post(f"{live_server.base_url}/webhook/incoming_call", data=chunks,
                             headers={"Content-Type": "application/x-www-form-urlencoded"}, timeout=5)
    assert response.status_code in (400, 413)


@pytest.mark.parametrize("field, value", [
    ("name", "מספרה\x00"), ("name", "a\x1bb"), ("business_prompt", "שלום\x07"), ("greeting", "\x7f"),
    ("voicemail_message", "x\x85"), ("webhook_secret", "s" * 16 + "\x00"),
])
def test_control_characters_in_text_are_a_422(live_server, field, value):
    body = {"name": "מספרה"} | {field: value}
    response = requests.post(f"{live_server.base_url}/api/businesses", json=body, timeout=5)
    assert response.status_code == 422, response.text
    assert field in response.json()["fields"]


def test_new_lines_and_tabs_are_text(live_server):
    response = requests.post(f"{live_server.base_url}/api/businesses",
                             json={"name": "מספרה", "business_prompt": "שורה\nשורה\r\n\tעוד"}, timeout=5)
    assert response.status_code == 201, response.text


@pytest.mark.parametrize("field, limit", [
    ("business_prompt", 20_000), ("greeting", 1_000), ("outbound_greeting", 1_000), ("voicemail_message", 1_000),
])
def test_every_text_field_has_a_cap(live_server, field, limit):
    url = f"{live_server.base_url}/api/businesses"
    assert requests.post(url, json={"name": "a", field: "x" * (limit + 1)}, timeout=5).status_code == 422
    assert requests.post(url, json={"name": "a", field: "x" * limit}, timeout=5).status_code == 201


def test_lead_notes_are_capped_and_clean(live_server, business_id):
    url = f"{live_server.base_url}/api/leads"
    lead = {"business_id": business_id, "phone": "+972501234567"}
    assert requests.post(url, json=lead | {"notes": "x" * 5_001}, timeout=5).status_code == 422
    assert requests.post(url, json=lead | {"notes": "\x00"}, timeout=5).status_code == 422
    assert requests.post(url, json=lead | {"name": "דנה\x00"}, timeout=5).status_code == 422


@pytest.mark.parametrize("depth", [200_000, 900, 40])
def test_deeply_nested_json_is_a_400(live_server, depth):
    body = '{"name": "a", "working_hours": {"sun": ' + "[" * depth + "]" * depth + "}}"
    response = requests.post(f"{live_server.base_url}/api/businesses", data=body,
                             headers={"Content-Type": "application/json"}, timeout=10)
    assert response.status_code == 400, response.text
    assert "error" in response.json()


def test_a_media_peer_sending_only_connected_frames_is_closed(live_server):
    assert media.MAX_FRAMES_BEFORE_START <= 5 and media.START_TIMEOUT_S <= 5
    ws = websocket.create_connection(live_server.media_url, timeout=5)
    for _ in range(media.MAX_FRAMES_BEFORE_START):
        ws.send(json.dumps({"event": "connected"}))
    opcode, data = ws.recv_data(control_frame=True)
    assert opcode == websocket.ABNF.OPCODE_CLOSE and int.from_bytes(data[:2], "big") == 1008
    ws.close()


def test_a_media_peer_trickling_bytes_is_closed_at_one_deadline(live_server, monkeypatch):
    monkeypatch.setattr(media, "START_TIMEOUT_S", 1.0)
    ws = websocket.create_connection(live_server.media_url, timeout=5)
    opened = time.monotonic()
    frame = websocket.ABNF.create_frame(json.dumps({"event": "connected"}), websocket.ABNF.OPCODE_TEXT).format()
    ws.sock.settimeout(0.1)
    closed_at = None
    # A byte every 100 ms: a deadline per read would never run out.
    for byte in frame * 3:
        try:
            ws.sock.sendall(bytes((byte,)))
            answer = ws.sock.recv(64)
        except socket.timeout:
            continue
        except OSError:
            answer = b""
        closed_at = time.monotonic() - opened
        assert answer == b"" or answer[0] == 0x88  # a close frame, or the socket gone
        break
    assert closed_at is not None and closed_at < 1.8, closed_at
    ws.close()
