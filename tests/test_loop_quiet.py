"""Side work waits for a quiet loop, and never longer than its bound."""
import gevent
from gevent.event import Event

from services.loop_quiet import wait_for_quiet


def test_on_a_loop_with_nothing_else_to_do_it_returns_at_once_as_quiet():
    assert wait_for_quiet(max_wait_s=30.0) is True


def test_work_that_is_ready_runs_before_the_waiter_goes_on():
    ran: list[str] = []
    waiter = gevent.spawn(lambda: (wait_for_quiet(max_wait_s=30.0), ran.append("side work")))
    ready = [gevent.spawn(ran.append, f"call {n}") for n in range(3)]
    gevent.joinall([waiter, *ready], timeout=30.0)
    assert ran == ["call 0", "call 1", "call 2", "side work"]


def test_a_loop_that_never_quiets_down_holds_it_only_for_its_bound():
    stop = Event()

    def busy() -> None:
        while not stop.is_set():
            gevent.sleep(0)

    spinner = gevent.spawn(busy)
    try:
        assert wait_for_quiet(max_wait_s=0.05) is False
    finally:
        stop.set()
        spinner.join(timeout=30.0)
    assert spinner.dead
