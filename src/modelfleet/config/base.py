"""Shared pydantic base and the one spec loader every command uses."""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from modelfleet.errors import SpecError
from modelfleet.yamlio import read_yaml_mapping


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
