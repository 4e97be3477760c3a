"""The bench spec: what to load-test, how hard, how to measure and what counts as a pass.

Every `modelfleet bench run` option is defined once, in `BENCH_OPTIONS` at the end: its flag, its
environment variable and the spec field it sets, whose description and default are the flag's help
text and shown default. So a run can live in a YAML file (`modelfleet bench run --config bench.yaml`)
and be reviewed like code, and the three spellings of an option cannot drift apart.
`modelfleet.bench.options.spec_from_sources` merges them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

from pydantic import BaseModel, Field, model_validator
from pydantic.fields import FieldInfo

from modelfleet.config.base import SpecModel

Mode = Literal["seq", "rnd", "closed", "open"]


class ModelTargetSpec(SpecModel):
    """One model on an Open Inference Protocol (V2) server, with its share of the traffic."""

    name: str = Field(min_length=1, description="Model name as the server knows it.")
    version: str | None = Field(
        default=None, description="Model version; requests go to /v2/models/NAME/versions/V."
    )
    weight: float = Field(default=1.0, gt=0, description="Relative share of requests in a traffic mix.")


class HttpEndpointSpec(SpecModel):
    """A plain HTTP JSON endpoint and the template its request bodies are made from."""

    url: str = Field(description="Full URL, e.g. http://10.0.0.5:8080/predict.")
    method: Literal["GET", "POST", "PUT"] = Field(
        default="POST", description="HTTP method of the plain endpoint: GET, POST or PUT."
    )
    body_template: str | None = Field(
        default=None,
        description="Request body; `{{sample}}` is replaced by a sample as a JSON string, e.g. "
        "'{\"text\": {{sample}}}'. Without one, requests have no body.",
    )
    name: str | None = Field(default=None, description="Label in results; defaults to METHOD path.")
    weight: float = Field(default=1.0, gt=0, description="Relative share of requests in a traffic mix.")
    headers: dict[str, str] = Field(default_factory=dict, description="Extra headers for this endpoint.")


class LoadPoint(SpecModel):
    """One step of a run: an arrival rate (open loop) or a concurrency (closed loop), for a time or a count.

    Neither `duration_s` nor `requests`: the point runs until it is stable, at most `stability.max_windows`.
    """

    rate_per_s: float | None = Field(default=None, gt=0, description="Open loop: total arrivals per second.")
    concurrency: int | None = Field(
        default=None, ge=1, le=100_000, description="Closed loop: requests in flight."
    )
    duration_s: float | None = Field(
        default=None, gt=0, description="Measured seconds, after ramp and warm-up."
    )
    requests: int | None = Field(default=None, ge=1, description="Measured requests, after ramp and warm-up.")
    ramp_s: float = Field(
        default=0.0,
        ge=0,
        description="Open loop: rise linearly from the previous point's rate; closed: start users evenly. Not measured.",
    )

    @model_validator(mode="after")
    def _one_stop_rule(self) -> LoadPoint:
        if self.duration_s is not None and self.requests is not None:
            raise ValueError("give a point `duration_s` or `requests`, not both")
        if self.rate_per_s is not None and self.concurrency is not None:
            raise ValueError("give a point `rate_per_s` (open loop) or `concurrency` (closed loop), not both")
        return self


class StabilitySpec(SpecModel):
    """When a point counts as stable: the last `windows` windows agree within `tolerance`."""

    windows: int = Field(default=3, ge=2, le=100, description="Windows that must agree.")
    tolerance: float = Field(
        default=0.10, gt=0, le=1, description="Allowed (max - min) / mean of throughput and p99."
    )
    max_windows: int = Field(
        default=30,
        ge=2,
        description="A run-until-stable point gives up after this many and is marked unstable.",
    )


class BenchSpec(SpecModel):
    target: str | None = Field(
        default=None,
        description="Base URL of a V2 server (http://host:8000); grpc://HOST:PORT with protocol grpc. "
        "Not needed with `serve_spec` or `endpoints`.",
    )
    protocol: Literal["v2", "http", "grpc"] = Field(
        default="v2",
        description="v2: Open Inference Protocol over REST; grpc: V2 gRPC (Triton's ModelInfer, target "
        "grpc://HOST:PORT or grpcs://HOST:PORT); http: plain JSON endpoints.",
    )
    models: list[ModelTargetSpec] = Field(
        default_factory=list, description="V2 models to load-test and their weights."
    )
    endpoints: list[HttpEndpointSpec] = Field(
        default_factory=list, description="Plain HTTP endpoints (protocol http)."
    )
    serve_spec: Path | None = Field(
        default=None,
        description="A `modelfleet serve` spec: the server's host/port and its models become the targets.",
    )
    samples_file: Path | None = Field(
        default=None,
        description="Text file, one sample per line (sentences for BYTES inputs and `{{sample}}`); "
        "without one, a built-in list of sentences.",
    )
    headers: dict[str, str] = Field(
        default_factory=dict, description="Headers on every request (e.g. authorization)."
    )
    verify_tls: bool = Field(default=True, description="Check the target's TLS certificate on https URLs.")
    mode: Mode = Field(
        default="closed",
        description="seq: every model once in order; rnd: N requests to random models; closed: fixed concurrency; open: arrival rate.",
    )
    arrival: Literal["constant", "poisson"] = Field(
        default="constant", description="Open loop arrival process: constant or poisson."
    )
    points: list[LoadPoint] = Field(
        default_factory=list, description="Load points, run in order (a sweep when several)."
    )
    repeat: int = Field(default=1, ge=1, description="seq mode: requests per model.")
    warmup_s: float = Field(
        default=1.0, ge=0, description="Seconds at full load before each point is measured (not measured)."
    )
    window_s: float = Field(
        default=1.0, gt=0, description="Length of a stability window and of a time-series step."
    )
    stability: StabilitySpec = Field(
        default_factory=StabilitySpec,
        description="When a point counts as stable; a point with neither `duration_s` nor `requests` runs "
        "until it is, or gives up after `max_windows` windows.",
    )
    honour_retry_after: bool = Field(
        default=True,
        description="Closed loop: a user whose request was refused with 503 waits what the refusal asked "
        "(the JSON body's retry_after_s, else the Retry-After header; at most max_retry_wait_s) before its "
        "next request, as a well-behaved client does; false resends at once (a refusal storm).",
    )
    max_retry_wait_s: float = Field(
        default=1.0,
        gt=0,
        le=60,
        description="Longest a closed-loop user waits after a 503 (honour_retry_after).",
    )
    timeout_s: float = Field(
        default=10.0,
        gt=0,
        le=3600,
        description="A request not answered this long after its intended send time fails as a timeout.",
    )
    max_in_flight: int = Field(
        default=1024,
        ge=1,
        le=100_000,
        description="Open loop: connections (and requests in flight) per target per process; sends beyond it wait and are counted as capped.",
    )
    procs: int = Field(
        default=1,
        ge=1,
        le=256,
        description="Generator processes on this machine; load is split between them.",
    )
    late_send_threshold_s: float = Field(
        default=0.002,
        gt=0,
        description="A send this much later than its intended time counts as late (the generator fell behind).",
    )
    max_late_fraction: float = Field(
        default=0.01, ge=0, le=1, description="More late sends than this share marks a point invalid."
    )
    slo: str | None = Field(
        default=None, description='Gates, e.g. "p99<100ms,error_rate<0.1%,throughput>500".'
    )
    requests_csv: Path | None = Field(
        default=None, description="Write one CSV row per request here (streamed to disk)."
    )
    track_endpoints_max: int = Field(
        default=64,
        ge=0,
        description="Keep a latency histogram per model up to this many models (counts are always kept).",
    )
    seed: int = Field(default=0, description="Seed for arrivals, model choice and generated inputs.")

    @model_validator(mode="after")
    def _consistent(self) -> BenchSpec:
        if self.protocol == "grpc":
            if self.endpoints or self.serve_spec is not None:
                raise ValueError("protocol grpc takes `target` (grpc://HOST:PORT) and `models`")
            if self.target is None or not self.models:
                raise ValueError("protocol grpc needs `target` (grpc://HOST:PORT) and at least one model")
        elif self.protocol == "v2":
            if self.endpoints:
                raise ValueError("`endpoints` are for protocol http; for V2 list `models`")
            if self.serve_spec is None and self.target is None:
                raise ValueError("give `target` (a V2 base URL) or `serve_spec`")
            if self.serve_spec is None and not self.models:
                raise ValueError("list at least one model (`models`, or --model on the command line)")
        elif not self.endpoints:
            raise ValueError("protocol http needs at least one endpoint (a URL and a body template)")
        self._check_points()
        return self

    def _check_points(self) -> None:
        if self.mode == "seq":
            if self.points:
                raise ValueError("seq mode sends every model `repeat` times in order; it takes no `points`")
            return
        if not self.points:
            hint = {
                "open": "a rate (--rate)",
                "closed": "a concurrency (--concurrency)",
                "rnd": "a request count (--requests)",
            }
            raise ValueError(f"{self.mode} mode needs at least one point with {hint[self.mode]}")
        for number, point in enumerate(self.points):
            if self.mode == "open" and point.rate_per_s is None:
                raise ValueError(f"points.{number}: open mode needs `rate_per_s`")
            if self.mode in ("closed", "rnd") and point.rate_per_s is not None:
                raise ValueError(f"points.{number}: `rate_per_s` is for open mode; use `concurrency`")
            if self.mode == "rnd" and point.requests is None:
                raise ValueError(f"points.{number}: rnd mode needs `requests`")

    def resolve_paths(self, base: Path) -> None:
        self.resolve_path_fields(base, "serve_spec", "samples_file", "requests_csv")

    def expected_point_s(self) -> list[float | None]:
        """Seconds each point should take (ramp, warm-up, measured); None where a request count stops it."""
        expected: list[float | None] = []
        for point in self.points:
            lead = point.ramp_s + self.warmup_s
            if point.duration_s is not None:
                expected.append(lead + point.duration_s)
            elif point.requests is None:
                expected.append(lead + self.stability.max_windows * self.window_s)
            else:
                expected.append(None)
        return expected


# --- the command line: every option once ---------------------------------------------------------

ENV_PREFIX = "MODELFLEET_BENCH_"
DEFAULT_DURATION_S = 10.0  # a point given on the command line without a stop rule
DEFAULT_CONCURRENCY = 1  # a closed loop given on the command line without --concurrency


@dataclass(frozen=True, slots=True)
class BenchOption:
    """One `bench run` option: its flag, its environment variable and the spec field it sets.

    The help text is the field's description, followed by `note` where the flag is shorthand for a
    structure (a sweep of points, a switch, another unit); the default shown is the field's, unless
    the command line has its own (`default`, used by the merge too).
    """

    key: str  # its name in `spec_from_sources(flags=...)` and, upper case, in MODELFLEET_BENCH_<KEY>
    field: str  # dotted path of the spec field it sets, e.g. "points.rate_per_s"
    kind: type[str] | type[int] | type[float] | type[bool] | type[Path] = str
    flags: tuple[str, ...] = ()  # none: the positional argument
    many: bool = False  # repeatable; one environment variable holds several, split at `separator`
    separator: str | None = None  # None: whitespace
    metavar: str | None = None
    note: str = ""
    scale: float = 1.0  # field value = flag value x scale (a flag in ms for a field in s)
    default: float | int | None = None  # the command line's own, where the field has none
    show_default: bool = True
    shorthand: bool = False  # set by its own rule in the merge, not copied into `field`

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.key.upper()

    @property
    def name(self) -> str:
        """How messages name it: its long flag, or its metavar for the positional argument."""
        return self.flags[0] if self.flags else (self.metavar or self.key)

    @property
    def help(self) -> str:
        description = spec_field(self.field).description or ""
        return f"{description} {self.note}" if self.note else description

    @property
    def default_value(self) -> float | int | str | None:
        """What applies when no source sets the option, in the flag's unit; None: nothing to show."""
        if self.default is not None:
            return self.default
        if self.kind is bool or not self.show_default:
            return None
        value = spec_field(self.field).default
        if isinstance(value, float) and self.scale != 1.0:
            return value / self.scale
        if isinstance(value, float | int | str) and not isinstance(value, bool):
            return value
        return None  # no default, or a list or a structure


def spec_field(path: str) -> FieldInfo:
    """The field at a dotted path through nested specs and lists of them, e.g. ``points.ramp_s``."""
    model: type[BaseModel] = BenchSpec
    *parents, name = path.split(".")
    for parent in parents:
        annotation = model.model_fields[parent].annotation
        model = next(
            arg
            for arg in (annotation, *get_args(annotation))
            if isinstance(arg, type) and issubclass(arg, BaseModel)
        )
    return model.model_fields[name]


_SWEEP = "Comma-separated for a sweep, one point each."

BENCH_OPTIONS: tuple[BenchOption, ...] = (
    BenchOption("target", "target", metavar="URL", note="With --http: the endpoint's URL.", shorthand=True),
    BenchOption(
        "models",
        "models",
        flags=("--model", "-m"),
        many=True,
        note="NAME[:VERSION][=WEIGHT]; repeat or comma-separate.",
        shorthand=True,
    ),
    BenchOption(
        "models_file",
        "models",
        Path,
        ("--models-file",),
        note="From a file, one NAME[:VERSION][=WEIGHT] per line.",
        shorthand=True,
    ),
    BenchOption("serve_spec", "serve_spec", Path, ("--spec",)),
    BenchOption("http", "protocol", bool, ("--http",), note="The flag: http.", shorthand=True),
    BenchOption("protocol", "protocol", flags=("--protocol",), shorthand=True),
    BenchOption("method", "endpoints.method", flags=("--method",), shorthand=True),
    BenchOption("body", "endpoints.body_template", flags=("--body",), shorthand=True),
    BenchOption(
        "headers",
        "headers",
        flags=("--header", "-H"),
        many=True,
        separator="\n",
        note="'NAME: VALUE'; repeatable (one per line in the variable).",
        shorthand=True,
    ),
    BenchOption("samples", "samples_file", Path, ("--samples",)),
    BenchOption(
        "mode", "mode", flags=("--mode",), note="Default: open with --rate, else closed.", show_default=False
    ),
    BenchOption("arrival", "arrival", flags=("--arrival",)),
    BenchOption("rate", "points.rate_per_s", flags=("--rate",), note=_SWEEP, shorthand=True),
    BenchOption(
        "concurrency",
        "points.concurrency",
        flags=("--concurrency",),
        note=_SWEEP,
        default=DEFAULT_CONCURRENCY,
        shorthand=True,
    ),
    BenchOption(
        "duration_s",
        "points.duration_s",
        float,
        ("--duration-s",),
        default=DEFAULT_DURATION_S,
        shorthand=True,
    ),
    BenchOption(
        "requests", "points.requests", int, ("--requests",), note="Instead of --duration-s.", shorthand=True
    ),
    BenchOption("ramp_s", "points.ramp_s", float, ("--ramp-s",), shorthand=True),
    BenchOption(
        "until_stable",
        "stability",
        bool,
        ("--until-stable",),
        note="The flag: every point runs until it is stable.",
        shorthand=True,
    ),
    BenchOption("warmup_s", "warmup_s", float, ("--warmup-s",)),
    BenchOption("window_s", "window_s", float, ("--window-s",)),
    BenchOption("timeout_s", "timeout_s", float, ("--timeout-s",)),
    BenchOption("max_in_flight", "max_in_flight", int, ("--max-in-flight",)),
    BenchOption("procs", "procs", int, ("--procs",)),
    BenchOption("repeat", "repeat", int, ("--repeat",)),
    BenchOption(
        "late_threshold_ms",
        "late_send_threshold_s",
        float,
        ("--late-threshold-ms",),
        note="In milliseconds.",
        scale=0.001,
    ),
    BenchOption("slo", "slo", flags=("--slo",)),
    BenchOption("requests_csv", "requests_csv", Path, ("--requests-csv",)),
    BenchOption("seed", "seed", int, ("--seed",)),
    BenchOption(
        "insecure", "verify_tls", bool, ("--insecure",), note="The flag turns the check off.", shorthand=True
    ),
)
