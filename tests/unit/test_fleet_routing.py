"""The router's pure parts: least-outstanding choice among ready replicas, readiness, bucket quantiles."""

from __future__ import annotations

import math

import pytest

from modelfleet.fleet.router_config import Upstream
from modelfleet.fleet.routing import (
    RECOVERING_S,
    WINDOW_CUT,
    WINDOW_FORGET_S,
    WINDOW_MIN,
    Replica,
    RetryBudget,
    RoutingTable,
    quantile_from_buckets,
)


def _table() -> RoutingTable:
    return RoutingTable(
        [
            Upstream(name="g0-0", group="g0", url="http://127.0.0.1:1", models=["a", "b"]),
            Upstream(name="g0-1", group="g0", url="http://127.0.0.1:2", models=["a", "b"]),
            Upstream(name="g1-0", group="g1", url="http://127.0.0.1:3", models=["c"]),
        ]
    )


def test_replicas_start_not_ready_so_no_request_reaches_a_cold_server() -> None:
    table = _table()
    assert table.choose("a") is None
    assert not table.fleet_ready()
    assert table.not_ready_models() == ["a", "b", "c"]


def test_choice_prefers_the_fewest_outstanding_requests() -> None:
    table = _table()
    for replica in table.replicas:
        replica.ready = True
    first, second = table.by_model["a"]
    first.outstanding, second.outstanding = 3, 1
    assert all(table.choose("a") is second for _ in range(10))
    second.outstanding = 5
    assert all(table.choose("a") is first for _ in range(10))


def test_ties_rotate_so_idle_replicas_share_the_load() -> None:
    table = _table()
    for replica in table.replicas:
        replica.ready = True
    chosen = [table.choose("a").name for _ in range(10)]  # type: ignore[union-attr]
    assert set(chosen) == {"g0-0", "g0-1"}
    assert chosen.count("g0-0") == 5


def test_unready_and_excluded_replicas_are_skipped() -> None:
    table = _table()
    first, second = table.by_model["a"]
    first.ready = True
    assert table.choose("a") is first
    assert table.choose("a", exclude=first) is None
    second.ready = True
    assert table.choose("a", exclude=first) is second
    assert table.choose("unknown") is None
    assert table.ready_replicas("a") == 2


def test_fleet_is_ready_when_every_model_has_a_ready_replica() -> None:
    table = _table()
    table.by_model["a"][0].ready = True
    assert table.not_ready_models() == ["c"]
    table.by_model["c"][0].ready = True
    assert table.fleet_ready()


@pytest.mark.parametrize(
    ("quantile", "expected"),
    [(0.5, 0.0015), (0.25, 0.001), (0.9, 0.0038), (0.99, 0.00488), (1.0, 0.005)],
)
def test_quantiles_interpolate_inside_buckets_like_prometheus(quantile: float, expected: float) -> None:
    bounds = [0.001, 0.002, 0.005, math.inf]
    cumulative = [25.0, 75.0, 100.0, 100.0]  # 25 in (0, 1 ms], 50 in (1, 2 ms], 25 in (2, 5 ms]
    assert quantile_from_buckets(quantile, bounds, cumulative) == pytest.approx(expected)


def test_quantile_above_the_last_bucket_reports_its_bound_and_empty_is_none() -> None:
    assert quantile_from_buckets(0.99, [0.001, math.inf], [1.0, 10.0]) == 0.001
    assert quantile_from_buckets(0.5, [0.001, math.inf], [0.0, 0.0]) is None


def test_replicas_at_their_in_flight_limit_are_skipped_and_none_left_means_shed() -> None:
    table = RoutingTable(
        [
            Upstream(name="a", group="g", url="http://a:1", models=["m"], max_in_flight=2),
            Upstream(name="b", group="g", url="http://b:1", models=["m"], max_in_flight=5),
        ]
    )
    a, b = table.replicas
    a.ready = b.ready = True
    a.outstanding, b.outstanding = 2, 4
    assert table.choose("m") is b  # a has fewer in flight but is at its limit
    b.outstanding = 5
    assert table.choose("m") is None  # every ready replica saturated: the router answers 503 at once
    a.outstanding = 1
    assert table.choose("m") is a


def test_retry_budget_allows_a_share_of_recent_requests_plus_a_minimum() -> None:
    budget = RetryBudget(percent=20, min_per_s=0.5, window_s=10, slots=10)  # reserve: 5 retries
    assert all(budget.can_retry() for _ in range(10))  # asking spends nothing
    assert sum(budget.try_retry() for _ in range(10)) == 5  # no requests yet: only the reserve
    assert not budget.can_retry()
    budget.requests += 100  # 100 requests → 20 more retries
    assert sum(budget.try_retry() for _ in range(50)) == 20
    for _ in range(9):  # 9 s later those requests and retries are still in the 10 s window
        budget.tick()
    assert not budget.try_retry()
    budget.tick()  # and now they have left it
    assert sum(budget.try_retry() for _ in range(10)) == 5


def test_a_retry_budget_of_zero_allows_no_retries() -> None:
    budget = RetryBudget(percent=0, min_per_s=0)
    budget.requests += 1000
    assert not budget.try_retry()


def test_a_held_replica_is_skipped_for_that_model_only_until_its_hold_ends() -> None:
    table = _table()
    first, second, _ = table.replicas
    first.ready = second.ready = True
    table.hold(first, "a", until=100.5)
    assert all(table.choose("a", now=100.0) is second for _ in range(6))
    assert {table.choose("b", now=100.0) for _ in range(6)} == {first, second}, "other models are not held"
    table.hold(second, "a", until=100.2)
    assert table.choose("a", now=100.0) is None  # every ready replica held: the router answers 503 itself
    assert table.hold_left_s("a", now=100.0) == pytest.approx(0.2)  # the first hold to end
    assert table.hold_left_s("b", now=100.0) is None
    assert table.choose("a", now=100.3) is second  # a recovered replica gets traffic as its hold ends
    assert table.hold_left_s("a", now=100.6) is None and {table.choose("a", now=100.6) for _ in range(4)} == {
        first,
        second,
    }
    assert not first.held_until and not second.held_until, "ended holds are dropped"


def test_a_held_replica_that_is_not_ready_does_not_count_as_held() -> None:
    table = _table()
    first, second, _ = table.replicas
    first.ready = True
    table.hold(second, "a", until=10.0)
    assert table.hold_left_s("a", now=5.0) is None  # the answer is "no ready replica", not "held"
    table.hold(first, "a", until=6.0)
    assert table.choose("a", now=5.0) is None and table.hold_left_s("a", now=5.0) == pytest.approx(1.0)


def _windowed_pair() -> tuple[RoutingTable, Replica, Replica]:
    table = RoutingTable(
        [
            Upstream(name="a", group="g", url="http://a:1", models=["m", "n"], max_in_flight=64),
            Upstream(name="b", group="g", url="http://b:1", models=["m", "n"], max_in_flight=64),
        ]
    )
    a, b = table.replicas
    a.ready = b.ready = True
    return table, a, b


def test_a_refusal_cuts_that_models_window_on_that_replica_to_a_share_of_its_requests_in_flight() -> None:
    table, a, b = _windowed_pair()
    for _ in range(10):
        a.sent("m")
    a.finished("m", refused=True, now=1.0)  # refused with 10 in flight: the window is 8
    assert a.windows["m"].size == pytest.approx(10 * WINDOW_CUT)
    for _ in range(8 - a.in_flight["m"]):
        a.sent("m")
    assert a.window_full("m", now=1.0) and table.windowed("m")
    b.outstanding = 60  # b is busier, but a's window is full: b takes the model
    assert table.choose("m", now=1.0) is b
    assert table.choose("n", now=1.0) is a, "another model is not limited by m's window"
    b.outstanding = 64
    assert table.choose("m", now=1.0) is None  # the router answers 503 itself (reason "window")


def test_the_refusals_of_one_round_trip_cut_the_window_once_and_answers_grow_it_back() -> None:
    _, a, _ = _windowed_pair()
    for _ in range(20):
        a.sent("m")
    for _ in range(5):  # five refusals of the same burst: one cut
        a.finished("m", refused=True, now=1.0)
    assert a.windows["m"].size == pytest.approx(20 * WINDOW_CUT)
    for _ in range(16):  # a window's worth of sends later, a refusal cuts again
        a.sent("m")
    a.finished("m", refused=True, now=1.1)
    assert a.windows["m"].size == pytest.approx(20 * WINDOW_CUT * WINDOW_CUT)  # min(window, in flight)
    size = a.windows["m"].size
    a.finished("m", refused=False, now=1.1)
    assert a.windows["m"].size == pytest.approx(size + 1 / size)  # one request per round trip
    for _ in range(2000):  # grown to the replica's limit, the window is dropped
        a.sent("m")
        a.finished("m", refused=False, now=1.2)
    assert "m" not in a.windows
    assert a.outstanding == sum(a.in_flight.values())


def test_a_window_is_floored_at_one_request_and_forgotten_when_no_refusal_renews_it() -> None:
    _, a, _ = _windowed_pair()
    a.sent("m")
    a.finished("m", refused=True, now=5.0)
    assert a.windows["m"].size == WINDOW_MIN  # one request in flight still goes
    assert not a.window_full("m", now=5.0)
    a.sent("m")
    assert a.window_full("m", now=5.0 + WINDOW_FORGET_S)
    assert not a.window_full("m", now=5.1 + WINDOW_FORGET_S) and "m" not in a.windows


def test_a_replica_that_comes_back_starts_each_model_in_slow_start_and_the_model_counts_as_degraded() -> None:
    table, a, b = _windowed_pair()
    table.replicas[0].ready = table.replicas[1].ready = False
    a.set_ready(True, now=0.0, polled=True)  # the first readiness at start: no window, nothing degraded
    b.set_ready(True, now=0.0, polled=True)
    assert not a.windows and not table.degraded("m", now=0.1)
    b.set_ready(False, now=0.5)  # a failed connection: not ready until the next poll, but no restart
    b.set_ready(True, now=0.6, polled=True)
    assert not b.windows and not table.degraded("m", now=0.6)
    b.set_ready(False, now=1.0, polled=True)  # b is down: degraded while a carries it
    assert table.degraded("m", now=1.0)
    b.set_ready(True, now=3.0, polled=True)  # b is back: one request of each model in flight, +1 per answer
    assert table.degraded("m", now=2.9 + RECOVERING_S)
    assert not table.degraded("m", now=3.0 + RECOVERING_S)
    assert b.windows["m"].size == WINDOW_MIN and b.windows["n"].size == WINDOW_MIN
    b.sent("m")
    assert b.window_full("m", now=3.0) and table.choose("m", exclude=a, now=3.0) is None
    for expected in (2, 3, 4):
        b.finished("m", refused=False, now=3.1)
        assert b.windows["m"].size == expected
        b.sent("m")
    for _ in range(3):
        b.sent("m")
    b.finished("m", refused=True, now=3.2)  # the first refusal ends slow start: cut, then AIMD
    window = b.windows["m"]
    assert not window.slow_start and window.size == pytest.approx(4 * WINDOW_CUT)
    b.finished("m", refused=False, now=3.3)
    assert window.size == pytest.approx(4 * WINDOW_CUT + 1 / (4 * WINDOW_CUT))
