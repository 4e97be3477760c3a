"""Shared pydantic base and the one spec loader every command uses."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from modelfleet.errors import InvalidInput, SpecError
from modelfleet.yamlio import read_yaml_mapping

# Kubernetes object names (RFC 1123 subdomains) as Secrets and other objects use them.
DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
MAX_SECRET_NAME_CHARS = 253


class SpecModel(BaseModel):
    """Specs reject unknown keys: a typo in a YAML file must fail loudly, not be ignored."""

    model_config = ConfigDict(extra="forbid", validate_default=True)

    def resolve_path_fields(self, base: Path, *names: str) -> None:
        """Make the named Path (or list-of-Path) fields absolute, relative to `base` (the spec's folder)."""
        for name in names:
            value = getattr(self, name)
            if isinstance(value, list):
                setattr(self, name, [_against(base, item) for item in value])
            elif value is not None:
                setattr(self, name, _against(base, value))


def _against(base: Path, path: Path) -> Path:
    return path if path.is_absolute() else (base / path).resolve()


SpecT = TypeVar("SpecT", bound=BaseModel)

# A command-line option's value: what a flag or an environment variable may set on a spec field.
OptionKind = type[str] | type[int] | type[float] | type[bool] | type[Path]
OptionScalar = str | int | float | bool | Path

_TRUE = ("1", "true", "yes", "on", "y", "t")
_FALSE = ("0", "false", "no", "off", "n", "f", "")


def parse_option_text(kind: OptionKind, text: str, source: str) -> OptionScalar:
    """Text from an environment variable or a command line as `kind`; `source` names it in errors."""
    if kind is bool:
        if text.strip().lower() in _TRUE:
            return True
        if text.strip().lower() in _FALSE:
            return False
        raise InvalidInput(f"{source} {text!r} is not a yes/no value (1, true, yes / 0, false, no)")
    if kind is int or kind is float:
        try:
            return kind(text)
        except ValueError:
            raise InvalidInput(f"{source} {text!r} is not a {kind.__name__} number") from None
    return Path(text) if kind is Path else text


def coerce_option_value(kind: OptionKind, value: object, source: str) -> OptionScalar:
    """A typed value (a library caller's) or text (parsed) as `kind`, refusing any other type."""
    if isinstance(value, str):
        return parse_option_text(kind, value, source)
    if kind is bool and isinstance(value, bool):
        return value
    if kind is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if kind is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if kind is Path and isinstance(value, Path):
        return value
    raise InvalidInput(f"{source}: {value!r} is not {kind.__name__}")


def format_validation_error(exc: ValidationError, source: str) -> str:
    """One readable line per problem: `models.0.batching.max_delay_s: Input should be ... (got -1)`."""
    parts = []
    for error in exc.errors():
        where = ".".join(str(p) for p in error["loc"]) or "(top level)"
        got = error.get("input")
        got_text = "" if isinstance(got, dict | list) else f" (got {got!r})"
        parts.append(f"{where}: {error['msg']}{got_text}")
    return f"{source}: " + "; ".join(parts)


def parse_spec(data: object, spec_type: type[SpecT], source: str = "spec") -> SpecT:
    try:
        return spec_type.model_validate(data)
    except ValidationError as exc:
        raise SpecError(format_validation_error(exc, source)) from None


def load_spec(path: Path | str, spec_type: type[SpecT]) -> SpecT:
    """Read a YAML (or JSON) spec file and validate it, with errors that name the file and the field."""
    path = Path(path)
    data = read_yaml_mapping(path)
    # Paths inside a spec are relative to the spec file, as a user reading the file would expect.
    spec = parse_spec(data, spec_type, str(path))
    resolve = getattr(spec, "resolve_paths", None)
    if callable(resolve):
        resolve(path.parent)
    return spec
