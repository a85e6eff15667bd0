"""A bounded FIFO gate for heavy work: at most N holders at once, the waiters served in arrival order.

Heavy work (Score-CAM, dataset extraction, t-SNE, benchmarks, training) takes a slot first, so that many
sessions on one server share the cores instead of all slowing to a crawl, and light work stays fast.

    gate = SlotQueue(2)
    with gate.acquire("t-SNE", should_stop=stop.is_set, on_wait=lambda t: print(t.describe())):
        ...  # at most 2 of these run at once

A waiter can see its place (`Ticket.ahead`), and leaves the queue when it is cancelled. Slots are handed
over by the gate itself (on enter, release and cancel), so the order is strictly first come, first served.
A thread that already holds a slot gets a nested ticket at once (no deadlock on nested heavy calls).
No Streamlit: plain threads.
"""

import os
import threading
from collections import deque
from collections.abc import Callable

from core import runtime
from core.errors import Cancelled, InvalidInputError

ENV = "VISIONLENS_HEAVY_SLOTS"


def default_slots(environ=None) -> int:
    """Slots from $VISIONLENS_HEAVY_SLOTS, else half the cores (at least 1)."""
    value = (os.environ if environ is None else environ).get(ENV, "").strip()
    if not value:
        return max(1, runtime.cores() // 2)
    try:
        slots = int(value)
    except ValueError:
        slots = 0
    if not 1 <= slots <= 1024:
        raise InvalidInputError(f"{ENV} must be a whole number from 1 to 1024, got {value!r}.")
    return slots


class Ticket:
    """One place in a SlotQueue. state: "queued" -> "running" -> "released", or "cancelled"."""

    def __init__(self, gate: "SlotQueue", label: str) -> None:
        self.gate, self.label = gate, label
        self.state = "queued"
        self.thread: int | None = None  # the thread that holds the slot (set by SlotQueue.hold)
        self.turn: int | None = None  # 1, 2, ...: the order in which the gate granted slots

    @property
    def ahead(self) -> int | None:
        """How many waiters are before this one (0: next in line); None once it is no longer queued."""
        return self.gate._ahead(self)

    def describe(self) -> str:
        """'Queued: 2 ahead of you (2 of 2 heavy-work slots busy)', or the state when not queued."""
        ahead = self.ahead
        if ahead is None:
            return {"running": "Running", "released": "Done", "cancelled": "Cancelled"}.get(self.state, self.state)
        busy = f"{self.gate.running} of {self.gate.slots} heavy-work slot{'s' if self.gate.slots != 1 else ''} busy"
        return f"Queued: {ahead} ahead of you ({busy})"

    def wait(self, timeout: float | None = None) -> bool:
        """Block until this ticket is no longer queued (or `timeout` s); True when it holds a slot."""
        return self.gate._wait(self, timeout)

    def release(self) -> None:
        """Give the slot back (or leave the queue): idempotent."""
        self.gate._leave(self)

    cancel = release

    def __enter__(self) -> "Ticket":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


class _Nested(Ticket):
    """The ticket a thread that already holds a slot gets: it takes no slot and releases nothing."""

    def __init__(self, gate: "SlotQueue", label: str) -> None:
        super().__init__(gate, label)
        self.state = "running"

    def release(self) -> None:
        self.state = "released"

    cancel = release


class SlotQueue:
    """At most `slots` tickets running at once; queued tickets get slots in the order they entered."""

    def __init__(self, slots: int | None = None) -> None:
        slots = default_slots() if slots is None else int(slots)
        if slots < 1:
            raise InvalidInputError(f"A queue needs at least one slot, got {slots}.")
        self.slots = slots
        self._cond = threading.Condition()
        self._waiting: deque[Ticket] = deque()
        self._running: list[Ticket] = []
        self._turns = 0

    @property
    def running(self) -> int:
        with self._cond:
            return len(self._running)

    @property
    def waiting(self) -> int:
        with self._cond:
            return len(self._waiting)

    def enter(self, label: str = "") -> Ticket:
        """Join the queue without blocking: the ticket is "running" at once when a slot is free."""
        ticket = Ticket(self, label)
        with self._cond:
            self._waiting.append(ticket)
            self._grant()
        return ticket

    def hold(
        self, ticket: Ticket, *, should_stop: Callable[[], bool] | None = None,
        on_wait: Callable[[Ticket], None] | None = None, poll: float = 0.25,
    ) -> Ticket:
        """Block until `ticket` holds a slot, calling on_wait(ticket) every `poll` s while it waits.

        Raises:
            Cancelled: should_stop() became true while waiting (the ticket has left the queue).
            Whatever on_wait raises (a page's rerun, for example): the ticket leaves the queue too.
        """
        try:
            while not ticket.wait(0):
                if ticket.state == "cancelled" or (should_stop is not None and should_stop()):
                    raise Cancelled(f"{ticket.label or 'The work'} was stopped while queued: nothing ran.")
                if on_wait is not None:
                    on_wait(ticket)
                ticket.wait(poll)
        except BaseException:
            ticket.release()  # leaves the queue, or gives back a slot granted meanwhile
            raise
        ticket.thread = threading.get_ident()
        return ticket

    def acquire(
        self, label: str = "", *, should_stop: Callable[[], bool] | None = None,
        on_wait: Callable[[Ticket], None] | None = None, poll: float = 0.25,
    ) -> Ticket:
        """enter() + hold(): a held ticket, to release (or use as a context manager)."""
        me = threading.get_ident()
        with self._cond:
            if any(t.thread == me for t in self._running):
                return _Nested(self, label)
        return self.hold(self.enter(label), should_stop=should_stop, on_wait=on_wait, poll=poll)

    # --- under the hood ---

    def _grant(self) -> None:  # with self._cond held
        while self._waiting and len(self._running) < self.slots:
            ticket = self._waiting.popleft()
            ticket.state = "running"
            self._turns += 1
            ticket.turn = self._turns
            self._running.append(ticket)
        self._cond.notify_all()

    def _ahead(self, ticket: Ticket) -> int | None:
        with self._cond:
            return self._waiting.index(ticket) if ticket.state == "queued" else None  # queued <=> in _waiting

    def _wait(self, ticket: Ticket, timeout: float | None) -> bool:
        with self._cond:
            self._cond.wait_for(lambda: ticket.state != "queued", timeout)
            return ticket.state == "running"

    def _leave(self, ticket: Ticket) -> None:
        with self._cond:
            if ticket.state == "queued":
                self._waiting.remove(ticket)
                ticket.state = "cancelled"
            elif ticket.state == "running":
                self._running.remove(ticket)
                ticket.state = "released"
            self._grant()
