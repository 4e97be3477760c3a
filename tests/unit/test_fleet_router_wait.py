"""The router's degraded waits (fleet/router_wait.py) on a real routing table and event loop: first come
first served, a refused request back at the front and paid from the retry budget, waits that end."""

from __future__ import annotations

import asyncio
import time

from modelfleet.fleet.router_config import Upstream
from modelfleet.fleet.router_wait import DegradedWaits, Waiting
from modelfleet.fleet.routing import Replica, RetryBudget, RoutingTable


class _Log:
    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []

    def entry(self, name: str, give_up_in_s: float = 5.0, resend: bool = False) -> Waiting:
        def send(replica: Replica) -> None:
            replica.sent("m")
            self.events.append(("sent", name))

        def refuse(budget_spent: bool) -> None:
            self.events.append(("budget" if budget_spent else "gave up", name))

        return Waiting(send, refuse, time.monotonic() + give_up_in_s, resend)


def _degraded(retries: float = 0.0) -> tuple[RoutingTable, Replica, DegradedWaits]:
    """Model m on two replicas of one request in flight each: ``a`` ready and busy, ``b`` down."""
    table = RoutingTable(
        [
            Upstream(name="a", group="g", url="http://a:1", models=["m"], max_in_flight=1),
            Upstream(name="b", group="g", url="http://b:1", models=["m"], max_in_flight=1),
        ]
    )
    a = table.replicas[0]
    a.set_ready(True, now=time.monotonic())
    a.sent("m")
    budget = RetryBudget(percent=0, min_per_s=retries / 10.0)  # `retries` in its 10 s window
    retried: list[str] = []
    waits = DegradedWaits(table, budget, retried.append, time.monotonic, max_wait_s=1.0, poll_s=0.01)
    return table, a, waits


def test_waiters_are_sent_first_come_first_served_as_slots_free_and_newcomers_queue_behind() -> None:
    async def run() -> list[tuple[str, str]]:
        _, a, waits = _degraded()
        log = _Log()
        assert waits.wait("m", log.entry("first"), time.monotonic())
        assert waits.wait("m", log.entry("second"), time.monotonic())
        assert waits.waiting("m")
        a.finished("m", refused=False, now=time.monotonic())  # one slot: the oldest takes it
        waits.drain("m")
        assert log.events == [("sent", "first")]
        # A newcomer joins the end even while the model has waiters (the router does not choose for it).
        assert waits.wait("m", log.entry("third"), time.monotonic())
        for _ in range(2):
            a.finished("m", refused=False, now=time.monotonic())
            waits.drain("m")
        assert not waits.waiting("m") and not waits.queues
        waits.close()
        return log.events

    assert asyncio.run(run()) == [("sent", "first"), ("sent", "second"), ("sent", "third")]


def test_a_refused_request_goes_back_to_the_front_and_its_resend_spends_the_retry_budget() -> None:
    async def run() -> list[tuple[str, str]]:
        _, a, waits = _degraded(retries=1.0)
        log = _Log()
        assert waits.wait("m", log.entry("waiting"), time.monotonic())
        assert waits.wait("m", log.entry("refused once", resend=True), time.monotonic())
        a.finished("m", refused=False, now=time.monotonic())
        waits.drain("m")  # the resend first, paid with the one retry the budget has
        # No retry left: a second refused request waits, and a first send behind it passes it.
        assert waits.wait("m", log.entry("refused too", give_up_in_s=0.05, resend=True), time.monotonic())
        assert waits.wait("m", log.entry("new"), time.monotonic())
        a.finished("m", refused=False, now=time.monotonic())
        waits.drain("m")  # a first send costs nothing
        a.finished("m", refused=False, now=time.monotonic())
        waits.drain("m")
        started = time.monotonic()
        while len(log.events) < 4 and time.monotonic() - started < 2.0:
            await asyncio.sleep(0.005)  # a slot is free, but no budget: it gives up, naming the budget
        waits.close()
        return log.events

    assert asyncio.run(run()) == [
        ("sent", "refused once"),
        ("sent", "waiting"),
        ("sent", "new"),
        ("budget", "refused too"),
    ]


def test_a_wait_ends_at_its_give_up_time_and_nothing_waits_while_every_replica_is_ready() -> None:
    async def run() -> tuple[list[tuple[str, str]], float, bool]:
        table, _, waits = _degraded()
        log = _Log()
        started = time.monotonic()
        assert waits.wait("m", log.entry("patient", give_up_in_s=0.05), started)
        while log.events == [] and time.monotonic() - started < 2.0:
            await asyncio.sleep(0.005)  # the timer refuses it: no slot ever freed
        elapsed_s = time.monotonic() - started
        # Both replicas ready (for the first time: no replica came back) and no waiters: no wait.
        table.replicas[1].set_ready(True, now=time.monotonic())
        table.replicas[1].sent("m")
        queued = waits.wait("m", log.entry("late"), time.monotonic())
        waits.close()
        return log.events, elapsed_s, queued

    events, elapsed_s, queued = asyncio.run(run())
    assert events == [("gave up", "patient")]
    assert 0.04 <= elapsed_s < 0.5
    assert not queued
