"""The response gate: shut until the session is confirmed, then one response at a time."""
import json
import logging

from services.response_gate import ResponseGate


def make_gate():
    sent = []
    gate = ResponseGate(lambda text: sent.append(json.loads(text)), logging.LoggerAdapter(logging.getLogger("t"), {}))
    return gate, sent


def test_nothing_is_sent_before_the_session_is_confirmed():
    gate, sent = make_gate()
    assert gate.request("greeting", "Say hello.") is False
    assert sent == []
    gate.open()
    assert sent == [{"type": "response.create", "response": {"instructions": "Say hello."}}]


def test_a_second_request_waits_for_the_first_to_finish():
    gate, sent = make_gate()
    gate.open()
    assert gate.request("greeting") is True
    gate.on_created("r1")
    assert gate.request("caller_turn") is False
    assert gate.request("caller_turn") is False  # still one slot, not two
    assert len(sent) == 1
    gate.on_done("r1")
    assert len(sent) == 2
    gate.on_created("r2")
    gate.on_done("r2")
    assert len(sent) == 2


def test_a_request_before_response_created_still_counts_as_active():
    gate, sent = make_gate()
    gate.open()
    gate.request("greeting")
    assert gate.is_active and gate.active_response_id is None
    gate.request("caller_turn")
    assert len(sent) == 1


def test_a_stale_done_does_not_release_the_active_response():
    gate, sent = make_gate()
    gate.open()
    gate.request("a")
    gate.on_created("r2")
    gate.on_done("r1")
    assert gate.is_active
    gate.drop_pending()
    gate.on_done("r2")
    assert not gate.is_active


def test_each_response_is_known_by_the_request_it_answers():
    gate, _ = make_gate()
    gate.open()
    gate.request("greeting")
    gate.request("goodbye")  # waits for the greeting
    assert gate.on_created("r1") == "greeting" and gate.active_request == ("r1", "greeting")
    gate.on_done("r1")
    assert gate.on_created("r2") == "goodbye"
    gate.on_done("r2")
    assert gate.active_request == (None, None)
