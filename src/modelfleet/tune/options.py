"""The tune spec from a file and flags: a flag (given, not None) replaces the file's field."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from modelfleet.config.base import parse_spec
from modelfleet.config.tune import TuneSpec
from modelfleet.errors import InvalidInput
from modelfleet.yamlio import read_yaml_mapping


def _cpu_sizes(text: str) -> list[dict[str, int]]:
    try:
        sizes = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise InvalidInput(f"--cpus {text!r} is not a comma-separated list of CPU counts, e.g. 1,2") from None
    if not sizes or min(sizes) < 1:
        raise InvalidInput(f"--cpus {text!r}: give CPU counts of at least 1")
    return [{"cpus": size} for size in sizes]


def tune_spec_from_sources(spec_file: Path | None, flags: Mapping[str, Any]) -> TuneSpec:
    """Read ``spec_file`` (paths relative to it), apply the flags that were given, validate."""
    data: dict[str, Any] = {}
    base = Path.cwd()
    if spec_file is not None:
        data = read_yaml_mapping(spec_file)
        base = spec_file.parent
    for key, value in flags.items():
        if value is None:
            continue
        if key == "cpus":
            data["hardware"] = _cpu_sizes(str(value))
        elif key == "artifacts":
            data["artifacts"] = [str(Path(p).resolve()) for p in value]
        else:
            data[key] = value
    if "artifacts" not in data:
        raise InvalidInput("give the artifacts to try: a tune spec with `artifacts:` or --model ARTIFACT_DIR")
    if "target_rate_per_s" not in data:
        raise InvalidInput("give the peak rate to serve: `target_rate_per_s:` in the spec or --target-rate")
    spec = parse_spec(data, TuneSpec, str(spec_file or "command line"))
    spec.resolve_paths(base.resolve())
    return spec
