"""The heavy-work gate: FIFO order, the bound, positions, cancellation, nesting, the slot count's setting."""

import threading

import pytest

from core import queueing, runtime
from core.errors import Cancelled, InvalidInputError


def _join(threads) -> None:
    for thread in threads:
        thread.join(30)
        assert not thread.is_alive()


def test_slots_are_granted_at_once_then_queued_in_order():
    gate = queueing.SlotQueue(2)
    first, second, third, fourth = (gate.enter(n) for n in "abcd")
    assert (first.state, second.state) == ("running", "running")
    assert (third.state, third.ahead) == ("queued", 0)
    assert (fourth.state, fourth.ahead) == ("queued", 1)
    assert fourth.describe() == "Queued: 1 ahead of you (2 of 2 heavy-work slots busy)"
    assert first.ahead is None and first.describe() == "Running"
    second.release()
    assert third.state == "running" and fourth.ahead == 0  # the first in line, not any waiter
    first.release()
    assert fourth.state == "running" and gate.running == 2 and gate.waiting == 0
    third.release(), fourth.release()
    assert gate.running == 0


def test_eight_threads_never_exceed_the_bound_and_start_in_arrival_order():
    gate = queueing.SlotQueue(3)
    blocker = [gate.enter("blocker") for _ in range(3)]  # full: everyone below queues, in a known order
    lock, inside, most, order = threading.Lock(), [0], [0], []
    tickets = [gate.enter(f"job {n}") for n in range(8)]
    assert [t.ahead for t in tickets] == list(range(8))
    release = threading.Event()

    def work(n: int, ticket: queueing.Ticket) -> None:
        gate.hold(ticket)
        with lock:
            order.append(n)
            inside[0] += 1
            most[0] = max(most[0], gate.running)  # the gate's own count, too
            most[0] = max(most[0], inside[0])
        release.wait(0.02)  # stay inside a little, so that holders overlap
        with lock:
            inside[0] -= 1
        ticket.release()

    threads = [threading.Thread(target=work, args=(n, t)) for n, t in enumerate(tickets)]
    for thread in threads:
        thread.start()
    for ticket in blocker:
        ticket.release()
    _join(threads)
    assert 1 <= most[0] <= 3 and sorted(order) == list(range(8))
    # slots are granted strictly first come, first served
    assert [t.turn for t in tickets] == sorted(t.turn for t in tickets)
    assert gate.running == 0 and gate.waiting == 0


def test_grant_order_is_fifo_with_one_slot():
    gate = queueing.SlotQueue(1)
    held = gate.enter("held")
    tickets = [gate.enter(str(n)) for n in range(6)]
    held.release()
    granted = []
    while any(t.state == "running" for t in tickets):
        (now,) = [t for t in tickets if t.state == "running"]  # never two at once
        granted.append(now.label)
        now.release()
    assert granted == [str(n) for n in range(6)]


def test_a_cancelled_waiter_leaves_the_queue_and_the_others_move_up():
    gate = queueing.SlotQueue(1)
    holder = gate.enter("holder")
    a, b, c = gate.enter("a"), gate.enter("b"), gate.enter("c")
    b.cancel()
    assert b.state == "cancelled" and b.ahead is None and c.ahead == 1 and gate.waiting == 2
    holder.release()
    assert a.state == "running" and b.state == "cancelled" and c.ahead == 0


def test_should_stop_while_queued_raises_cancelled_and_frees_the_place():
    gate = queueing.SlotQueue(1)
    holder = gate.enter("holder")
    stop = threading.Event()
    seen, errors = [], []

    def wait() -> None:
        try:
            gate.acquire("Score-CAM", should_stop=stop.is_set, on_wait=lambda t: (seen.append(t.ahead), stop.set()),
                         poll=0.01)
        except Cancelled as error:
            errors.append(error)

    thread = threading.Thread(target=wait)
    thread.start()
    _join([thread])
    assert seen and seen[0] == 0
    assert errors and "stopped while queued" in str(errors[0])
    assert gate.waiting == 0 and gate.running == 1
    holder.release()
    assert gate.running == 0


def test_an_exception_from_on_wait_leaves_the_queue():
    gate = queueing.SlotQueue(1)
    holder = gate.enter("holder")

    def boom(ticket):
        raise KeyboardInterrupt  # stands for Streamlit's rerun exception raised at an element update

    with pytest.raises(KeyboardInterrupt):
        gate.acquire("x", on_wait=boom)
    assert gate.waiting == 0
    holder.release()


def test_a_thread_that_holds_a_slot_is_not_blocked_by_its_own_nested_call():
    gate = queueing.SlotQueue(1)
    with gate.acquire("outer") as outer:
        with gate.acquire("inner") as inner:  # would deadlock without nesting
            assert inner.state == "running" and gate.running == 1
        assert outer.state == "running" and gate.running == 1
    assert gate.running == 0


def test_slot_count_from_the_environment_or_the_cores():
    assert queueing.default_slots({}) == max(1, runtime.cores() // 2)
    assert queueing.default_slots({queueing.ENV: "3"}) == 3
    for bad in ("0", "-1", "many"):
        with pytest.raises(InvalidInputError, match=queueing.ENV):
            queueing.default_slots({queueing.ENV: bad})
    with pytest.raises(InvalidInputError):
        queueing.SlotQueue(0)
