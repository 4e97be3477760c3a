"""What a run sends where: targets from flags or specs, model metadata, pre-encoded requests.

Targets come from three places, all reduced to a list of `ModelTarget` (V2) or `HttpEndpointSpec`
(plain HTTP): explicit flags, a `BenchSpec`, or another spec through an adapter in `SPEC_ADAPTERS`.
An adapter is a function from a spec to a list of `ModelTarget`; adding the fleet spec is one function
and one line in that tuple.

Requests are encoded once, before any load: a run only picks a ready ``bytes`` object and writes it.
"""

from __future__ import annotations

import asyncio
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import aiohttp
import orjson

from modelfleet import __version__
from modelfleet.bench.samples import BUILTIN_QA_PAIRS
from modelfleet.config.base import SpecModel, parse_spec
from modelfleet.config.bench import BenchSpec, HttpEndpointSpec, ModelTargetSpec
from modelfleet.config.serve import ServeSpec
from modelfleet.errors import InvalidInput, ModelfleetError, NotFound, SpecError, Unavailable
from modelfleet.manifest import read_manifest
from modelfleet.transport.client import Origin
from modelfleet.types import Datatype, ModelRef
from modelfleet.yamlio import read_yaml_mapping

SAMPLE_PLACEHOLDER = "{{sample}}"
QA_INPUTS = ("question", "context")  # a model taking these two texts gets (question, context) pairs
MAX_BODIES_PER_ENDPOINT = 1024  # distinct bodies kept per endpoint; requests cycle through them
NUMERIC_VARIANTS = 16  # distinct random bodies for models without text inputs
VARIABLE_DIM_SIZE = 16  # size picked for a variable (-1) dimension other than the batch dimension
_METADATA_CONCURRENCY = 32


@dataclass(frozen=True, slots=True)
class ModelTarget:
    """One model on one V2 server, with its share of the traffic."""

    base_url: str
    name: str
    version: str | None = None
    weight: float = 1.0


@dataclass(frozen=True, slots=True)
class PreparedEndpoint:
    """A target ready for load: where to connect and the exact bytes of each request."""

    name: str
    origin: Origin
    requests: tuple[bytes, ...]
    weight: float
    # Set for a V2 gRPC endpoint (bench/grpc_target.py): the call metadata; None: HTTP requests.
    grpc_metadata: tuple[tuple[str, str], ...] | None = None


@dataclass(slots=True)
class PreparedTargets:
    label: str
    endpoints: list[PreparedEndpoint]
    models: list[dict[str, Any]] = field(default_factory=list)  # name, versions, platform, weight


# --- adapters: a spec → model targets -------------------------------------------------------------


def targets_from_serve_spec(spec: ServeSpec) -> list[ModelTarget]:
    """The models a `modelfleet serve` spec loads, at the address it listens on."""
    host = spec.server.host
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"  # a wildcard listen address is reached through loopback from the same machine
    scheme = "https" if spec.server.tls_cert_file is not None else "http"
    host_part = f"[{host}]" if ":" in host else host
    base_url = f"{scheme}://{host_part}:{spec.server.port}"
    targets = []
    for model in spec.models:
        if model.name is not None:
            name = model.name
        elif model.path is not None:
            name = read_manifest(model.path).name
        else:
            name = ModelRef.parse(model.ref or "").name
        targets.append(ModelTarget(base_url=base_url, name=name))
    return targets


SpecAdapter = Callable[[Any], list[ModelTarget]]
# (spec type, adapter), tried in order. The fleet spec joins here with its own adapter.
SPEC_ADAPTERS: tuple[tuple[type[SpecModel], SpecAdapter], ...] = ((ServeSpec, targets_from_serve_spec),)


def targets_from_spec_file(path: Path) -> list[ModelTarget]:
    """Read any spec an adapter knows and return its model targets."""
    data = read_yaml_mapping(path)
    first_error: SpecError | None = None
    for spec_type, adapter in SPEC_ADAPTERS:
        try:
            spec = parse_spec(data, spec_type, str(path))
        except SpecError as exc:
            first_error = first_error or exc
            continue
        resolve = getattr(spec, "resolve_paths", None)
        if callable(resolve):
            resolve(path.parent)
        return adapter(spec)
    assert first_error is not None
    raise first_error


def model_targets(spec: BenchSpec) -> list[ModelTarget]:
    targets = targets_from_spec_file(spec.serve_spec) if spec.serve_spec is not None else []
    base_url = spec.target
    for model in spec.models:
        if base_url is None:  # models listed next to a serve spec go to its server
            if not targets:
                raise InvalidInput("models are listed but no target URL is given")
            base_url = targets[0].base_url
        targets.append(ModelTarget(base_url, model.name, model.version, model.weight))
    if (
        spec.target is not None and spec.serve_spec is not None
    ):  # an explicit URL overrides the spec's address
        targets = [ModelTarget(spec.target, t.name, t.version, t.weight) for t in targets]
    if not targets:
        raise InvalidInput("no models to load-test")
    return targets


def parse_model_option(text: str) -> ModelTargetSpec:
    """``NAME``, ``NAME:VERSION``, optionally ``=WEIGHT``: e.g. ``bert:2=3``."""
    ref_text, _, weight_text = text.partition("=")
    try:
        ref = ModelRef.parse(ref_text)
        weight = float(weight_text) if weight_text else 1.0
    except ValueError as exc:
        raise InvalidInput(f"--model {text!r}: {exc}; use NAME, NAME:VERSION or NAME=WEIGHT") from None
    if ref.alias is not None:
        raise InvalidInput(f"--model {text!r}: a V2 server knows versions, not aliases")
    if not math.isfinite(weight) or weight <= 0:
        raise InvalidInput(f"--model {text!r}: the weight must be a positive number")
    return ModelTargetSpec(name=ref.name, version=ref.version, weight=weight)


# --- URLs and requests -----------------------------------------------------------------------------


def parse_url(url: str, verify_tls: bool = True) -> tuple[Origin, str, str]:
    """(origin, host header, path+query) of an http(s) URL."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidInput(f"target {url!r} is not an http:// or https:// URL with a host")
    tls = parts.scheme == "https"
    try:
        port = parts.port or (443 if tls else 80)
    except ValueError:
        raise InvalidInput(f"target {url!r} has an invalid port") from None
    host_header = parts.netloc.rpartition("@")[2]
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return Origin(parts.hostname, port, tls, verify_tls), host_header, path


def encode_request(
    method: str, host_header: str, path: str, headers: dict[str, str], body: bytes | None
) -> bytes:
    lines = [
        f"{method} {path} HTTP/1.1",
        f"Host: {host_header}",
        f"User-Agent: modelfleet-bench/{__version__}",
        "Accept: */*",
    ]
    for name, value in headers.items():
        if "\r" in name or "\n" in name or "\r" in value or "\n" in value:
            raise InvalidInput(f"header {name!r} contains a line break")
        lines.append(f"{name}: {value}")
    if body is not None:
        if not any(name.lower() == "content-type" for name in headers):
            lines.append("Content-Type: application/json")
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b"")


def render_template(template: str, sample: str) -> bytes:
    return template.replace(SAMPLE_PLACEHOLDER, orjson.dumps(sample).decode()).encode()


def http_endpoint(
    spec: HttpEndpointSpec, samples: Sequence[str], headers: dict[str, str], verify_tls: bool
) -> PreparedEndpoint:
    origin, host_header, path = parse_url(spec.url, verify_tls)
    all_headers = {**headers, **spec.headers}
    template = spec.body_template
    if template is None:
        bodies: list[bytes | None] = [None]
    else:
        chosen = samples[:MAX_BODIES_PER_ENDPOINT] if SAMPLE_PLACEHOLDER in template else samples[:1]
        bodies = [render_template(template, sample) for sample in chosen]
        if "json" in all_headers.get("Content-Type", all_headers.get("content-type", "json")):
            try:
                orjson.loads(bodies[0] or b"")
            except orjson.JSONDecodeError:
                raise InvalidInput(
                    f"endpoint {spec.url}: the body template does not give valid JSON "
                    f"(put {SAMPLE_PLACEHOLDER} where a JSON string goes, without quotes around it)"
                ) from None
    name = spec.name or f"{spec.method} {path}"
    requests = tuple(encode_request(spec.method, host_header, path, all_headers, body) for body in bodies)
    return PreparedEndpoint(name=name, origin=origin, requests=requests, weight=spec.weight)


def _concrete_shape(shape: Sequence[int]) -> list[int]:
    """Batch dimension 1; other variable dimensions a fixed size."""
    return [
        1 if index == 0 and dim == -1 else (VARIABLE_DIM_SIZE if dim == -1 else dim)
        for index, dim in enumerate(shape)
    ]


def v2_bodies(metadata: dict[str, Any], samples: Sequence[str], seed: int, model: str = "") -> list[bytes]:
    """Inference request bodies built from a model's V2 metadata: text for BYTES, random numbers otherwise."""
    model = model or str(metadata.get("name"))
    inputs = metadata.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise InvalidInput(f"model {model!r}: its metadata lists no inputs; is the target a V2 server?")
    has_text = False
    for tensor in inputs:
        if not isinstance(tensor, dict) or not {"name", "datatype", "shape"} <= tensor.keys():
            raise InvalidInput(f"model {model!r}: an input in its metadata lacks name, datatype or shape")
        try:
            Datatype(tensor["datatype"])
        except ValueError:
            raise InvalidInput(f"model {model!r}: unknown datatype {tensor['datatype']!r}") from None
        has_text = has_text or tensor["datatype"] == "BYTES"
    names = [tensor["name"] for tensor in inputs]
    if names == list(QA_INPUTS) and all(tensor["datatype"] == "BYTES" for tensor in inputs):
        return _qa_bodies(inputs)
    variants = min(len(samples), MAX_BODIES_PER_ENDPOINT) if has_text else NUMERIC_VARIANTS
    rng = random.Random(seed)
    bodies = []
    for variant in range(variants):
        tensors = []
        for tensor in inputs:
            shape = _concrete_shape(tensor["shape"])
            count = math.prod(shape)
            datatype = Datatype(tensor["datatype"])
            data: list[Any]
            if datatype is Datatype.BYTES:
                data = [samples[(variant + i) % len(samples)] for i in range(count)]
            elif datatype is Datatype.BOOL:
                data = [rng.random() < 0.5 for _ in range(count)]
            elif datatype.numpy_dtype.kind == "f":
                data = [round(rng.gauss(0.0, 1.0), 6) for _ in range(count)]
            else:  # small non-negative integers fit every integer type (and are valid token ids)
                data = [rng.randrange(0, 100) for _ in range(count)]
            tensors.append({"name": tensor["name"], "shape": shape, "datatype": datatype.value, "data": data})
        bodies.append(orjson.dumps({"inputs": tensors}))
    return bodies


def _qa_bodies(inputs: list[dict[str, Any]]) -> list[bytes]:
    """Question answering bodies: the built-in (question, context) pairs, a question with its own
    context in every item (single sentences cannot make valid pairs, so --samples is not used)."""
    pairs = BUILTIN_QA_PAIRS
    bodies = []
    for variant in range(min(len(pairs), MAX_BODIES_PER_ENDPOINT)):
        shape = _concrete_shape(inputs[0]["shape"])
        count = math.prod(shape)
        chosen = [pairs[(variant + i) % len(pairs)] for i in range(count)]
        tensors = [
            {"name": name, "shape": shape, "datatype": "BYTES", "data": [pair[position] for pair in chosen]}
            for position, name in enumerate(QA_INPUTS)
        ]
        bodies.append(orjson.dumps({"inputs": tensors}))
    return bodies


def v2_path(target: ModelTarget, suffix: str = "") -> str:
    path = f"/v2/models/{quote(target.name, safe='')}"
    if target.version is not None:
        path += f"/versions/{quote(target.version, safe='')}"
    return path + suffix


# --- network: metadata and reachability --------------------------------------------------------------


async def _fetch_metadata(
    session: aiohttp.ClientSession, target: ModelTarget, headers: dict[str, str]
) -> dict[str, Any]:
    url = target.base_url.rstrip("/") + v2_path(target)
    try:
        async with session.get(url, headers=headers) as response:
            body = await response.read()
            status = response.status
    except (aiohttp.ClientConnectionError, OSError) as exc:
        raise Unavailable(f"cannot reach {target.base_url}: {exc.__class__.__name__}: {exc}") from None
    except TimeoutError:
        raise Unavailable(f"{target.base_url} did not answer a metadata request within its timeout") from None
    if status == 404:
        raise NotFound(
            f"model {target.name!r} is not on the server at {target.base_url} (GET {url} answered 404)"
        )
    if status >= 400:
        message = body[:200].decode(errors="replace")
        error = Unavailable if status >= 500 else InvalidInput
        raise error(f"GET {url} answered {status}: {message}")
    try:
        metadata = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise InvalidInput(f"GET {url} did not return JSON; is {target.base_url} a V2 server?") from None
    if not isinstance(metadata, dict):
        raise InvalidInput(f"GET {url} returned JSON that is not V2 model metadata")
    return metadata


async def _prepare_v2(spec: BenchSpec, samples: Sequence[str]) -> PreparedTargets:
    targets = model_targets(spec)
    for base_url in {t.base_url for t in targets}:
        parse_url(base_url)  # a bad URL is bad input, found before any request
    semaphore = asyncio.Semaphore(_METADATA_CONCURRENCY)
    timeout = aiohttp.ClientTimeout(total=min(spec.timeout_s, 30.0))
    connector = aiohttp.TCPConnector(limit=_METADATA_CONCURRENCY, ssl=bool(spec.verify_tls))

    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:

        async def one(target: ModelTarget) -> dict[str, Any]:
            async with semaphore:
                return await _fetch_metadata(session, target, spec.headers)

        metadata = await asyncio.gather(*(one(target) for target in targets))

    endpoints = []
    models = []
    for number, (target, meta) in enumerate(zip(targets, metadata, strict=True)):
        origin, host_header, base_path = parse_url(target.base_url, spec.verify_tls)
        path = base_path.rstrip("/") + v2_path(target, "/infer")
        bodies = v2_bodies(meta, samples, spec.seed + number, target.name)
        requests = tuple(encode_request("POST", host_header, path, spec.headers, body) for body in bodies)
        label = target.name if target.version is None else f"{target.name}:{target.version}"
        endpoints.append(PreparedEndpoint(name=label, origin=origin, requests=requests, weight=target.weight))
        versions = meta.get("versions")
        models.append(
            {
                "name": target.name,
                "versions": [str(v) for v in versions]
                if isinstance(versions, list)
                else ([target.version] if target.version else []),
                "platform": meta.get("platform") if isinstance(meta.get("platform"), str) else None,
                "weight": target.weight,
            }
        )
    label = (
        targets[0].base_url
        if len({t.base_url for t in targets}) == 1
        else f"{len({t.base_url for t in targets})} servers"
    )
    return PreparedTargets(label=label, endpoints=endpoints, models=models)


async def _check_reachable(origin: Origin, timeout_s: float) -> None:
    try:
        _, writer = await asyncio.wait_for(
            asyncio.open_connection(origin.host, origin.port, ssl=origin.ssl_context()), timeout=timeout_s
        )
    except (OSError, TimeoutError) as exc:
        raise Unavailable(
            f"cannot reach {origin.host}:{origin.port}: {exc.__class__.__name__}: {exc}"
        ) from None
    writer.close()


async def _prepare_http(spec: BenchSpec, samples: Sequence[str]) -> PreparedTargets:
    endpoints = [http_endpoint(e, samples, spec.headers, spec.verify_tls) for e in spec.endpoints]
    for origin in {e.origin for e in endpoints}:
        await _check_reachable(origin, min(spec.timeout_s, 10.0))
    label = spec.endpoints[0].url if len(spec.endpoints) == 1 else f"{len(spec.endpoints)} endpoints"
    return PreparedTargets(label=label, endpoints=endpoints)


def prepare_targets(spec: BenchSpec, samples: Sequence[str]) -> PreparedTargets:
    """Resolve targets, read metadata and encode every request body. Raises before any load is sent."""
    if spec.protocol == "grpc":
        from modelfleet.bench.grpc_target import prepare_grpc

        coroutine = prepare_grpc(spec, samples)
    else:
        coroutine = _prepare_v2(spec, samples) if spec.protocol == "v2" else _prepare_http(spec, samples)
    try:
        return asyncio.run(coroutine)
    except ModelfleetError:
        raise
    except aiohttp.InvalidURL as exc:
        raise InvalidInput(f"invalid target URL: {exc}") from None
