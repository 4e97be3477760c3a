"""API key scopes: ``admin``, ``read`` and ``infer:<model or glob>``.

``admin`` (load/unload models, the repository API, registry changes) grants everything; ``read`` grants
metadata and metrics; ``infer:bert-*`` grants inference on models whose name matches the glob.
Routes require one concrete scope: ``infer:<model>``, ``read`` or ``admin``.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Literal

from modelfleet.errors import InvalidInput

ScopeKind = Literal["admin", "read", "infer"]
_GLOB = re.compile(r"^[A-Za-z0-9_.\-*?\[\]!]+$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass(frozen=True, slots=True)
class Scope:
    kind: ScopeKind
    pattern: str | None = None  # the model glob of an infer scope

    @classmethod
    def parse(cls, text: str) -> Scope:
        """A scope a key may be granted: ``admin``, ``read`` or ``infer:<glob>``."""
        text = text.strip()
        if text in ("admin", "read"):
            return cls(text)  # type: ignore[arg-type]
        if text.startswith("infer:") and _GLOB.match(text[6:]):
            return cls("infer", text[6:])
        raise InvalidInput(
            f"scope {text!r} is not valid: use admin, read, or infer:<model or glob> (e.g. infer:bert-*)"
        )

    def allows(self, required: Scope) -> bool:
        if self.kind == "admin":
            return True
        if self.kind == "read":
            return required.kind == "read"
        return (
            required.kind == "infer"
            and required.pattern is not None
            and fnmatchcase(required.pattern, self.pattern or "")
        )

    def __str__(self) -> str:
        return self.kind if self.pattern is None else f"{self.kind}:{self.pattern}"


@functools.lru_cache(maxsize=4096)
def required_scope(text: str) -> Scope:
    """The scope a route needs: ``admin``, ``read`` or ``infer:<model name>`` (a concrete name, no glob)."""
    scope = Scope.parse(text)
    if scope.kind == "infer" and not _NAME.match(scope.pattern or ""):
        raise InvalidInput(f"required scope {text!r} must name one model, not a glob")
    return scope


def parse_scopes(texts: Iterable[str]) -> tuple[Scope, ...]:
    scopes = tuple(dict.fromkeys(Scope.parse(text) for text in texts))
    if not scopes:
        raise InvalidInput("a key needs at least one scope (admin, read, or infer:<model or glob>)")
    return scopes


def allows(granted: Iterable[Scope], required: Scope) -> bool:
    return any(scope.allows(required) for scope in granted)
