"""Alias rules as pure functions: valid names and where a rollback goes."""

from __future__ import annotations

import re
from collections.abc import Sequence

from modelfleet.errors import InvalidInput
from modelfleet.registry.models import AliasEvent

_ALIAS = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,62}$")


def check_alias_name(alias: str) -> str:
    if not _ALIAS.match(alias):
        raise InvalidInput(
            f"alias {alias!r} is not valid: start with a letter, then letters, digits, '_', '.', '-' (at most 63)"
        )
    return alias


def rollback_target(history: Sequence[AliasEvent]) -> int | None:
    """The version an alias returns to on rollback, from its history (oldest first); None if there is none.

    Every set or promote pushes the version it replaced; a rollback pops back to where it goes. So
    promote 1, 2, 3 then rollback, rollback lands on 2 and then 1, never flip-flopping between 2 and 3.
    A rollback to a version not on the stack (an explicit `--to`) counts like a set.
    """
    stack: list[int] = []
    for event in history:
        if event.action == "rollback" and event.to_version in stack:
            while stack and stack.pop() != event.to_version:
                pass
        elif event.from_version is not None and event.from_version != event.to_version:
            stack.append(event.from_version)
    current = history[-1].to_version if history else None
    while stack and stack[-1] == current:
        stack.pop()
    return stack[-1] if stack else None
