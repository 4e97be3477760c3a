"""Turn command-line style options into a validated `BenchSpec` (optionally on top of a YAML spec).

Kept out of the CLI module so the same rules serve `bench run`, `bench render-job` and library users.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modelfleet.bench.targets import parse_model_option
from modelfleet.config.base import parse_spec
from modelfleet.config.bench import BenchSpec
from modelfleet.errors import InvalidInput, NotFound
from modelfleet.yamlio import read_yaml_mapping

DEFAULT_DURATION_S = 10.0


@dataclass(slots=True)
class RunOptions:
    """Everything `bench run` accepts; None means "not given" (the config file or a default decides)."""

    url: str | None = None
    config: Path | None = None
    spec: Path | None = None
    models: list[str] = field(default_factory=list)
    models_file: Path | None = None
    http: bool = False
    method: str | None = None
    body: str | None = None
    headers: list[str] = field(default_factory=list)
    samples: Path | None = None
    mode: str | None = None
    rates: str | None = None
    concurrencies: str | None = None
    duration_s: float | None = None
    requests: int | None = None
    ramp_s: float | None = None
    until_stable: bool = False
    arrival: str | None = None
    warmup_s: float | None = None
    window_s: float | None = None
    timeout_s: float | None = None
    max_in_flight: int | None = None
    procs: int | None = None
    repeat: int | None = None
    late_send_threshold_s: float | None = None
    slo: str | None = None
    requests_csv: Path | None = None
    seed: int | None = None
    insecure: bool = False


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


def _read_config(path: Path) -> dict[str, Any]:
    return read_yaml_mapping(path, "bench config")


def _model_lines(path: Path) -> list[str]:
    if not path.is_file():
        raise NotFound(f"models file {path} does not exist")
    return [
        line.strip()
        for line in path.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]


def _points(options: RunOptions, data: dict[str, Any], mode: str) -> list[dict[str, Any]] | None:
    """New points when the flags describe the load shape; None keeps the config's points."""
    stop: dict[str, Any] = {}
    if options.duration_s is not None:
        stop["duration_s"] = options.duration_s
    if options.requests is not None:
        stop["requests"] = options.requests
    extra: dict[str, Any] = {"ramp_s": options.ramp_s} if options.ramp_s is not None else {}
    if options.rates is None and options.concurrencies is None:
        if data.get("points"):
            if not stop and not extra:
                return None
            adjusted = []  # the flags adjust every configured point
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
        concurrencies = [1.0]
    else:
        concurrencies = (
            parse_number_list(options.concurrencies, "concurrency", True) if options.concurrencies else []
        )
    if not stop and not options.until_stable:
        if mode == "rnd":
            raise InvalidInput("rnd mode needs --requests N")
        stop = {"duration_s": DEFAULT_DURATION_S}
    if options.rates is not None:
        if options.concurrencies is not None:
            raise InvalidInput("give --rate (open loop) or --concurrency (closed loop), not both")
        return [
            {"rate_per_s": rate, **stop, **extra} for rate in parse_number_list(options.rates, "rate", False)
        ]
    return [{"concurrency": int(c), **stop, **extra} for c in concurrencies]


def spec_from_options(options: RunOptions) -> BenchSpec:
    data: dict[str, Any] = _read_config(options.config) if options.config is not None else {}
    base = options.config.parent if options.config is not None else Path.cwd()
    if options.spec is not None:
        data["serve_spec"] = str(options.spec.resolve())
    if options.http:
        data["protocol"] = "http"
    protocol = data.get("protocol", "v2")
    if options.url is not None:
        if protocol == "http":
            endpoint: dict[str, Any] = {"url": options.url}
            if options.method is not None:
                endpoint["method"] = options.method
            if options.body is not None:
                endpoint["body_template"] = options.body
            data["endpoints"] = [endpoint]
        else:
            data["target"] = options.url
    elif protocol == "http" and (options.body is not None or options.method is not None):
        raise InvalidInput("--body and --method describe a plain HTTP endpoint: give its URL too")
    model_texts = [m for text in options.models for m in text.split(",") if m.strip()]
    if options.models_file is not None:
        model_texts += _model_lines(options.models_file)
    if model_texts:
        data["models"] = [parse_model_option(text.strip()).model_dump() for text in model_texts]
    if options.headers:
        data["headers"] = {**data.get("headers", {}), **dict(parse_header(h) for h in options.headers)}
    if options.insecure:
        data["verify_tls"] = False
    simple = {
        "samples_file": str(options.samples.resolve()) if options.samples is not None else None,
        "mode": options.mode,
        "arrival": options.arrival,
        "warmup_s": options.warmup_s,
        "window_s": options.window_s,
        "timeout_s": options.timeout_s,
        "max_in_flight": options.max_in_flight,
        "procs": options.procs,
        "repeat": options.repeat,
        "late_send_threshold_s": options.late_send_threshold_s,
        "slo": options.slo,
        "requests_csv": str(options.requests_csv.resolve()) if options.requests_csv is not None else None,
        "seed": options.seed,
    }
    data.update({key: value for key, value in simple.items() if value is not None})
    mode = data.get("mode") or ("open" if options.rates is not None else "closed")
    data["mode"] = mode
    points = _points(options, data, mode)
    if points is not None:
        data["points"] = points
    source = str(options.config) if options.config is not None else "command line"
    spec = parse_spec(data, BenchSpec, source)
    spec.resolve_paths(base)
    return spec
