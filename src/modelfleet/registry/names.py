"""Model names and references as the registry reads them: parse, check, and describe version ranges."""

from __future__ import annotations

from modelfleet.errors import InvalidInput
from modelfleet.types import ModelRef


def parse_ref(ref: ModelRef | str) -> ModelRef:
    if isinstance(ref, ModelRef):
        return ref
    try:
        return ModelRef.parse(ref)
    except ValueError as exc:
        raise InvalidInput(str(exc)) from None


def check_model_name(name: str) -> str:
    parsed = parse_ref(name)
    if parsed.version is not None or parsed.alias is not None:
        raise InvalidInput(f"model name {name!r} must not contain ':' or '@'")
    return name


def require_reason(reason: str, verb: str) -> None:
    if not reason.strip():
        raise InvalidInput(f"say why you {verb} (a reason is recorded in the alias history)")


def describe_ranges(numbers: list[int]) -> str:
    if len(numbers) > 1 and numbers[-1] - numbers[0] == len(numbers) - 1:
        return f"{numbers[0]}–{numbers[-1]}"
    return ", ".join(str(n) for n in numbers)
