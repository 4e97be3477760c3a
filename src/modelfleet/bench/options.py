"""Merge the sources of a bench run into one validated `BenchSpec`: the rules `bench run` and library users share.

Precedence, per option: flag > environment variable (``MODELFLEET_BENCH_<KEY>``) > spec file (``config``)
> field default. The options themselves are `modelfleet.config.bench.BENCH_OPTIONS`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from modelfleet.config.base import coerce_option_value, parse_spec
from modelfleet.config.bench import (
    BENCH_OPTIONS,
    DEFAULT_CONCURRENCY,
    DEFAULT_DURATION_S,
    BenchOption,
    BenchSpec,
)
from modelfleet.errors import InvalidInput, NotFound
from modelfleet.yamlio import read_yaml_mapping

OptionValue = str | int | float | bool | Path | list[str]

_BY_KEY = {option.key: option for option in BENCH_OPTIONS}


def spec_from_sources(
    config: Path | None = None,
    flags: Mapping[str, object] | None = None,
    env: Mapping[str, str] | None = None,
    fleet: Path | None = None,
    state_dir: Path | None = None,
) -> BenchSpec:
    """The bench spec that a spec file, environment variables and flags describe together.

    `flags` maps option keys (`BenchOption.key`, e.g. ``"rate"``, ``"duration_s"``) to values, typed or
    as the text a command line gives; None means not given. `env` is usually ``os.environ``; only
    ``MODELFLEET_BENCH_*`` variables are read. `fleet` (a running local fleet's spec file or name) gives
    the target and models where neither flag nor variable does. Paths from flags and variables are
    relative to the working directory, paths in the file to the file. Raises `InvalidInput` (bad option),
    `SpecError` (a spec that does not validate) or `NotFound` (a file that is not there).
    """
    given = _given(flags or {}, env or {})
    if fleet is not None:
        from modelfleet.fleet.local import fleet_endpoints

        router_url, fleet_models = fleet_endpoints(fleet, state_dir)
        given.setdefault("target", router_url)
        given.setdefault("models", fleet_models)
    data: dict[str, Any] = read_yaml_mapping(config, "bench config") if config is not None else {}
    _apply(given, data)
    spec = parse_spec(data, BenchSpec, str(config) if config is not None else "command line")
    spec.resolve_paths(config.parent if config is not None else Path.cwd())
    from modelfleet.bench.slo import parse_slo

    parse_slo(spec.slo)  # bad gates fail here, before any load is sent (and in a --dry-run)
    return spec


# --- sources -------------------------------------------------------------------------------------


def _given(flags: Mapping[str, object], env: Mapping[str, str]) -> dict[str, OptionValue]:
    """Option values by key, a flag winning over its environment variable."""
    unknown = sorted(set(flags) - set(_BY_KEY))
    if unknown:
        raise InvalidInput(f"unknown bench options {unknown}; known: {sorted(_BY_KEY)}")
    given: dict[str, OptionValue] = {}
    for option in BENCH_OPTIONS:
        flag = flags.get(option.key)
        if flag is not None and flag != [] and flag is not False:
            given[option.key] = _coerce(option, flag, option.name)
        elif option.env in env:
            value = _coerce(option, env[option.env], option.env)
            if value != [] and value is not False:
                given[option.key] = value
    return given


def _coerce(option: BenchOption, value: object, source: str) -> OptionValue:
    """A flag's value as its option's kind; text (an environment variable, a command line) is parsed."""
    if not option.many:
        return coerce_option_value(option.kind, value, source)
    if isinstance(value, str):
        return [item for item in value.split(option.separator) if item.strip()]
    if isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
        return list(value)
    raise InvalidInput(f"{source}: {value!r} is not a list of text")


# --- onto the spec -------------------------------------------------------------------------------


def _apply(given: Mapping[str, OptionValue], data: dict[str, Any]) -> None:
    """Write the given options into the spec file's data: plain ones onto their field, shorthands by rule."""
    if "protocol" in given:
        data["protocol"] = given["protocol"]
    if given.get("http"):
        data["protocol"] = "http"
    _apply_target(given, data)
    model_texts = [m for text in _texts(given, "models") for m in text.split(",") if m.strip()]
    if "models_file" in given:
        model_texts += _model_lines(_path(given, "models_file"))
    if model_texts:
        from modelfleet.bench.targets import parse_model_option

        data["models"] = [parse_model_option(text.strip()).model_dump() for text in model_texts]
    headers = _texts(given, "headers")
    if headers:
        data["headers"] = {**data.get("headers", {}), **dict(parse_header(h) for h in headers)}
    if given.get("insecure"):
        data["verify_tls"] = False
    for option in BENCH_OPTIONS:
        if option.shorthand or option.key not in given:
            continue
        value = given[option.key]
        if isinstance(value, Path):
            data[option.field] = str(value.resolve())
        elif isinstance(value, float) and option.scale != 1.0:
            data[option.field] = value * option.scale
        else:
            data[option.field] = value
    mode = data.get("mode") or ("open" if "rate" in given else "closed")
    data["mode"] = mode
    points = _points(given, data, mode)
    if points is not None:
        data["points"] = points


def _apply_target(given: Mapping[str, OptionValue], data: dict[str, Any]) -> None:
    method, body = given.get("method"), given.get("body")
    if "target" not in given:
        if data.get("protocol") == "http" and (body is not None or method is not None):
            raise InvalidInput("--body and --method describe a plain HTTP endpoint: give its URL too")
        return
    if data.get("protocol", "v2") != "http":
        data["target"] = given["target"]
        return
    endpoint: dict[str, Any] = {"url": given["target"]}
    if method is not None:
        endpoint["method"] = method
    if body is not None:
        endpoint["body_template"] = body
    data["endpoints"] = [endpoint]


def _points(given: Mapping[str, OptionValue], data: dict[str, Any], mode: str) -> list[dict[str, Any]] | None:
    """New points when the options describe the load shape; None keeps the file's points."""
    stop: dict[str, Any] = {key: given[key] for key in ("duration_s", "requests") if key in given}
    extra: dict[str, Any] = {"ramp_s": given["ramp_s"]} if "ramp_s" in given else {}
    rates, concurrencies = given.get("rate"), given.get("concurrency")
    if rates is None and concurrencies is None:
        if data.get("points"):
            if not stop and not extra:
                return None
            adjusted = []  # the options adjust every point of the file
            for configured in data["points"]:
                point = dict(configured) if isinstance(configured, dict) else {}
                if stop:
                    point.pop("duration_s", None)
                    point.pop("requests", None)
                adjusted.append({**point, **stop, **extra})
            return adjusted
        if mode == "seq":
            return None
        if mode == "open":
            raise InvalidInput("open mode needs --rate (one rate, or a comma-separated sweep)")
        counts = [float(DEFAULT_CONCURRENCY)]
    else:
        counts = parse_number_list(str(concurrencies), "concurrency", True) if concurrencies else []
    if not stop and not given.get("until_stable"):
        if mode == "rnd":
            raise InvalidInput("rnd mode needs --requests N")
        stop = {"duration_s": DEFAULT_DURATION_S}
    if rates is not None:
        if concurrencies is not None:
            raise InvalidInput("give --rate (open loop) or --concurrency (closed loop), not both")
        return [
            {"rate_per_s": rate, **stop, **extra} for rate in parse_number_list(str(rates), "rate", False)
        ]
    return [{"concurrency": int(c), **stop, **extra} for c in counts]


def parse_number_list(text: str, what: str, integer: bool) -> list[float]:
    values = []
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        try:
            value = float(item)
        except ValueError:
            raise InvalidInput(f"--{what} {text!r}: {item!r} is not a number") from None
        if value <= 0 or (integer and value != int(value)):
            raise InvalidInput(
                f"--{what} {text!r}: {item!r} must be a positive {'whole number' if integer else 'number'}"
            )
        values.append(value)
    if not values:
        raise InvalidInput(f"--{what} needs at least one value")
    return values


def parse_header(text: str) -> tuple[str, str]:
    name, sep, value = text.partition(":")
    if not sep or not name.strip():
        raise InvalidInput(f"--header {text!r} is not NAME: VALUE")
    return name.strip(), value.strip()


def _texts(given: Mapping[str, OptionValue], key: str) -> list[str]:
    value = given.get(key, [])
    return value if isinstance(value, list) else [str(value)]


def _path(given: Mapping[str, OptionValue], key: str) -> Path:
    value = given[key]
    return value if isinstance(value, Path) else Path(str(value))


def _model_lines(path: Path) -> list[str]:
    if not path.is_file():
        raise NotFound(f"models file {path} does not exist")
    return [
        line.strip()
        for line in path.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
