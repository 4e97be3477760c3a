"""Turning third-party exceptions into the one-line messages our errors carry."""

from __future__ import annotations


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (libraries often append long tracebacks or dumps)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
