"""The router sends a model preferably to a replica that has it loaded (learnt from its repository index)."""

from __future__ import annotations

from modelfleet.fleet.router_config import Upstream
from modelfleet.fleet.routing import RoutingTable


def _ready_table() -> RoutingTable:
    table = RoutingTable(
        [
            Upstream(name="r0", group="g", url="http://127.0.0.1:1", models=["a", "b"]),
            Upstream(name="r1", group="g", url="http://127.0.0.1:2", models=["a", "b"]),
        ]
    )
    for replica in table.replicas:
        replica.ready = True
    return table


def _index(unloaded: list[str], loaded: list[str]) -> list[dict[str, str]]:
    return [
        *(
            {"name": n, "version": "1", "state": "UNAVAILABLE", "reason": "not loaded (lazy)"}
            for n in unloaded
        ),
        *({"name": n, "version": "1", "state": "READY", "reason": ""} for n in loaded),
    ]


def test_a_replica_with_the_model_loaded_wins_over_a_less_busy_one_without_it() -> None:
    table = _ready_table()
    cold, warm = table.replicas
    cold.note_index(_index(unloaded=["a"], loaded=["b"]))
    warm.note_index(_index(unloaded=["b"], loaded=["a"]))
    cold.outstanding, warm.outstanding = 0, 5
    assert all(table.choose("a") is warm for _ in range(10))
    assert all(table.choose("b") is cold for _ in range(10))


def test_with_no_replica_loaded_the_least_busy_loads_it_and_is_preferred_from_then_on() -> None:
    table = _ready_table()
    first, second = table.replicas
    for replica in table.replicas:
        replica.note_index(_index(unloaded=["a"], loaded=[]))
    first.outstanding, second.outstanding = 2, 1
    assert table.choose("a") is second
    assert "a" not in second.unloaded and "a" in first.unloaded  # it is loading it now
    second.outstanding = 4
    assert all(table.choose("a") is second for _ in range(10))


def test_a_saturated_replica_with_it_loaded_is_skipped_for_one_that_must_load_it() -> None:
    table = _ready_table()
    cold, warm = table.replicas
    cold.note_index(_index(unloaded=["a"], loaded=[]))
    warm.outstanding = warm.limit
    assert table.choose("a") is cold


def test_an_index_that_is_not_a_list_or_has_other_states_marks_nothing_unloaded() -> None:
    table = _ready_table()
    replica = table.replicas[0]
    replica.note_index({"error": "forbidden"})
    assert replica.unloaded == set()
    replica.note_index([{"name": "a", "state": "UNAVAILABLE", "reason": "update failed"}, "junk"])
    assert replica.unloaded == set()
