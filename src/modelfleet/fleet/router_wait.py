"""Requests that wait on the router, first come first served, while a replica of their model is down.

When a replica dies its load falls on the others, which refuse or fill their windows for the seconds a
restart takes; failing fast then turns a brief backlog into lost requests. So while a model is degraded
(a replica not ready, or back for under RECOVERING_S: routing.RoutingTable.degraded), a request that finds no ready replica with room waits in the model's queue here and
is sent as soon as one has room: when an answer of the model frees a slot, when a hold ends, or at the
latest after a short poll (a slot freed by another model's answer). It gives up (503) at its own
``give_up_at``: ``max_degraded_wait_s`` after it came, and never past its deadline.

One queue per model, in arrival order, and a request that arrives while its model's queue is not empty
joins the queue's end even if a slot is free: with each waiter polling on its own timer (the design
before this one) a newcomer took the slot a request waiting for 400 ms was about to get, and the oldest
ran past the wait and got 503 (chaos, kill -9 of one of two replicas at half load: 54 of 2,400 lost in
one run of six, all of them waiters). A request a replica refused goes back to the queue's front, since
it came before those behind it; its next send is a retry and costs one of the retry budget, while a
first send from the queue costs nothing (the request was never sent). While the budget is spent a resend
waits (the first sends behind it pass) and is refused, naming the budget, only when its wait is over:
refused at once, as before, it was lost at the moment the budget ran out (chaos kill: 41 of 43 losses of
one run were replica refusals passed on because a resend had no budget).

Only the event loop's thread touches a queue; the hot path pays one falsy check (``queues``) while no
model is waiting.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from modelfleet.fleet.routing import Replica, RetryBudget, RoutingTable


@dataclass(slots=True)
class Waiting:
    """One request waiting for room. ``send`` sends it on a replica; ``refuse`` answers it 503, told
    whether the retry budget (True) or the wait (False) ran out."""

    send: Callable[[Replica], None]
    refuse: Callable[[bool], None]
    give_up_at: float
    resend: bool  # a replica refused it once: its next send is a retry


class DegradedWaits:
    """The waiting requests of every model whose replicas are not all ready (see the module's docstring)."""

    def __init__(
        self,
        table: RoutingTable,
        budget: RetryBudget,
        on_retry: Callable[[str], None],
        now: Callable[[], float],
        max_wait_s: float,
        poll_s: float,
    ) -> None:
        self._table = table
        self._budget = budget
        self._on_retry = on_retry
        self._now = now
        self.max_wait_s = max_wait_s
        self._poll_s = poll_s
        self.queues: dict[str, deque[Waiting]] = {}
        self._timers: dict[str, asyncio.TimerHandle] = {}

    def waiting(self, model: str) -> bool:
        """Whether requests of ``model`` wait now (a newcomer then queues behind them). The hot path
        checks ``queues`` (empty while no model waits) before calling this."""
        return model in self.queues

    def wait(self, model: str, entry: Waiting, now: float) -> bool:
        """Queue ``entry`` if ``model`` is degraded (or already has waiters) and there is time and budget
        for it; False: the caller answers 503 at once."""
        if model not in self.queues and not self._table.degraded(model, now):
            return False
        if now + self._poll_s > entry.give_up_at:
            return False
        queue = self.queues.setdefault(model, deque())
        if entry.resend:
            queue.appendleft(entry)
        else:
            queue.append(entry)
        self._arm(model, now)
        return True

    def drain(self, model: str) -> None:
        """Send ``model``'s waiters, oldest first, while a ready replica has room; refuse those whose wait
        is over."""
        queue = self.queues.get(model)
        if queue is None:
            return
        now = self._now()
        if any(waiting.give_up_at <= now for waiting in queue):
            for over in [waiting for waiting in queue if waiting.give_up_at <= now]:
                queue.remove(over)
                over.refuse(over.resend and not self._budget.can_retry())
        while queue:
            # The oldest that may go: a resend waits while the retry budget is spent (it refills as its
            # window slides) and lets the first sends behind it pass.
            entry: Waiting | None = queue[0]
            if queue[0].resend and not self._budget.can_retry():
                entry = next((waiting for waiting in queue if not waiting.resend), None)
            if entry is None:
                break
            replica = self._table.choose(model, now=now)
            if replica is None:
                break
            queue.remove(entry)
            if entry.resend:
                self._budget.try_retry()
                self._on_retry(model)
            entry.send(replica)
        if queue:
            self._arm(model, now)
        elif self.queues.get(model) is queue:
            # A send never answers at once; if one did, its refusal could have queued anew: that stays.
            del self.queues[model]
            timer = self._timers.pop(model, None)
            if timer is not None:
                timer.cancel()

    def _arm(self, model: str, now: float) -> None:
        """Drain ``model`` again when its first held replica takes it again (else after a poll), or when
        its first waiter gives up, whichever comes first."""
        held_s = self._table.hold_left_s(model, now)
        first_give_up_s = min(entry.give_up_at for entry in self.queues[model]) - now
        wait_s = max(min(self._poll_s if held_s is None else held_s, first_give_up_s), 0.001)
        timer = self._timers.get(model)
        if timer is not None:
            if timer.when() <= asyncio.get_running_loop().time() + wait_s:
                return
            timer.cancel()
        self._timers[model] = asyncio.get_running_loop().call_later(wait_s, self._fire, model)

    def _fire(self, model: str) -> None:
        self._timers.pop(model, None)
        self.drain(model)

    def close(self) -> None:
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
