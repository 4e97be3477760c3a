"""Alias rules: valid names and where rollback goes, as pure functions over the history."""

from __future__ import annotations

import pytest

from modelfleet.errors import InvalidInput
from modelfleet.registry.aliases import check_alias_name, rollback_target
from modelfleet.registry.models import AliasEvent


def _history(*moves: tuple[str, int | None, int]) -> list[AliasEvent]:
    return [
        AliasEvent(
            id=i,
            name="m",
            alias="production",
            action=action,
            from_version=before,
            to_version=after,  # type: ignore[arg-type]
            reason="r",
            actor="a",
            at="t",
        )
        for i, (action, before, after) in enumerate(moves, start=1)
    ]


def test_rollback_walks_back_through_promotions_without_flip_flopping() -> None:
    history = _history(("promote", None, 1), ("promote", 1, 2), ("promote", 2, 3))
    assert rollback_target(history) == 2
    history += _history(("rollback", 3, 2))
    assert rollback_target(history) == 1
    history += _history(("rollback", 2, 1))
    assert rollback_target(history) is None


def test_rollback_after_a_new_promotion_returns_to_the_version_it_replaced() -> None:
    history = _history(("promote", None, 1), ("promote", 1, 2), ("rollback", 2, 1), ("promote", 1, 3))
    assert rollback_target(history) == 1


def test_explicit_rollback_to_a_version_off_the_stack_counts_like_a_set() -> None:
    history = _history(("promote", None, 1), ("promote", 1, 2), ("rollback", 2, 5))
    assert rollback_target(history) == 2


def test_no_history_means_nothing_to_roll_back_to() -> None:
    assert rollback_target([]) is None
    assert rollback_target(_history(("set", None, 4))) is None


@pytest.mark.parametrize("name", ["production", "staging", "canary-2", "a.b_c"])
def test_valid_alias_names(name: str) -> None:
    assert check_alias_name(name) == name


@pytest.mark.parametrize("name", ["", "3", "-x", "has space", "a@b", "x" * 64])
def test_invalid_alias_names_are_refused(name: str) -> None:
    with pytest.raises(InvalidInput):
        check_alias_name(name)
