"""Scope grammar and matching: admin ⊇ everything, read, infer:<glob>."""

from __future__ import annotations

import pytest

from modelfleet.errors import InvalidInput
from modelfleet.security.scopes import Scope, allows, parse_scopes, required_scope


@pytest.mark.parametrize(
    ("granted", "required", "allowed"),
    [
        (["infer:bert-*"], "infer:bert-base", True),
        (["infer:bert-*"], "infer:gpt", False),
        (["infer:bert-*"], "read", False),
        (["infer:iris"], "infer:iris", True),
        (["infer:iris"], "infer:iris2", False),
        (["infer:*"], "infer:anything", True),
        (["infer:*"], "admin", False),
        (["read"], "read", True),
        (["read"], "infer:iris", False),
        (["read"], "admin", False),
        (["admin"], "infer:iris", True),
        (["admin"], "read", True),
        (["admin"], "admin", True),
        (["read", "infer:m?"], "infer:m1", True),
        (["infer:Bert"], "infer:bert", False),  # case-sensitive, like model names
    ],
)
def test_matching(granted: list[str], required: str, allowed: bool) -> None:
    assert allows(parse_scopes(granted), required_scope(required)) is allowed


@pytest.mark.parametrize("text", ["", "write", "infer:", "infer:a b", "infer:../x", "ADMIN", "infer:x;y"])
def test_invalid_scopes_are_refused(text: str) -> None:
    with pytest.raises(InvalidInput):
        Scope.parse(text)


def test_required_scope_must_name_one_model() -> None:
    with pytest.raises(InvalidInput, match="one model"):
        required_scope("infer:bert-*")


def test_scopes_are_deduplicated_and_need_at_least_one() -> None:
    assert [str(s) for s in parse_scopes(["read", "read", "infer:x"])] == ["read", "infer:x"]
    with pytest.raises(InvalidInput, match="at least one scope"):
        parse_scopes([])
