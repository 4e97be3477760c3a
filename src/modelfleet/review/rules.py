"""Custom-lens risk-rule conditions: `&&`, `||`, `!`, parentheses over choice ids, and `default`. Never eval.

Grammar (as the Well-Architected Tool reads it; `!` binds tightest, then `&&`, then `||`):
    expr := and ('||' and)* ; and := not ('&&' not)* ; not := '!' not | atom ; atom := ID | '(' expr ')'
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from modelfleet.errors import InvalidInput

_TOKEN = re.compile(r"\s*(&&|\|\||!|\(|\)|[A-Za-z0-9_]+)")


def tokenize(condition: str) -> list[str]:
    tokens, position = [], 0
    text = condition.rstrip()
    while position < len(text):
        match = _TOKEN.match(text, position)
        if match is None:
            raise InvalidInput(
                f"risk rule {condition!r}: unexpected {text[position : position + 10]!r} at {position}"
            )
        tokens.append(match.group(1))
        position = match.end()
    return tokens


class _Parser:
    def __init__(self, condition: str, selected: set[str]) -> None:
        self.condition = condition
        self.tokens = tokenize(condition)
        self.position = 0
        self.selected = selected

    def _peek(self) -> str | None:
        return self.tokens[self.position] if self.position < len(self.tokens) else None

    def _take(self) -> str:
        token = self._peek()
        if token is None:
            raise InvalidInput(f"risk rule {self.condition!r}: ends too early")
        self.position += 1
        return token

    def parse(self) -> bool:
        value = self._or()
        if self._peek() is not None:
            raise InvalidInput(f"risk rule {self.condition!r}: unexpected {self._peek()!r}")
        return value

    # Both sides are always parsed (no short cut), so a malformed right side fails whatever the left is.
    def _or(self) -> bool:
        value = self._and()
        while self._peek() == "||":
            self._take()
            right = self._and()
            value = value or right
        return value

    def _and(self) -> bool:
        value = self._not()
        while self._peek() == "&&":
            self._take()
            right = self._not()
            value = value and right
        return value

    def _not(self) -> bool:
        if self._peek() == "!":
            self._take()
            return not self._not()
        return self._atom()

    def _atom(self) -> bool:
        token = self._take()
        if token == "(":
            value = self._or()
            if self._take() != ")":
                raise InvalidInput(f"risk rule {self.condition!r}: missing ')'")
            return value
        if token in ("&&", "||", ")", "!"):
            raise InvalidInput(f"risk rule {self.condition!r}: unexpected {token!r}")
        return token in self.selected


def evaluate(condition: str, selected: Iterable[str]) -> bool:
    """Whether `condition` holds when the choices in `selected` are selected (`default` always holds)."""
    if condition.strip() == "default":
        return True
    return _Parser(condition, set(selected)).parse()


def rule_risk(rules: list[dict[str, str]], selected: Iterable[str]) -> str:
    """The risk of the first rule whose condition holds (the tool's order: first true condition wins)."""
    chosen = set(selected)
    for rule in rules:
        if evaluate(rule["condition"], chosen):
            return rule["risk"]
    raise InvalidInput("risk rules: none holds (the last rule must be `default`)")
