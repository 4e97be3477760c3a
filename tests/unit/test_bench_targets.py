"""Targets: URLs, pre-encoded requests, bodies from V2 metadata, templates, model options, spec adapters."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import httptools
import pytest

from modelfleet.bench.targets import (
    encode_request,
    http_endpoint,
    model_targets,
    parse_model_option,
    parse_url,
    targets_from_spec_file,
    v2_bodies,
)
from modelfleet.config.bench import BenchSpec, HttpEndpointSpec
from modelfleet.errors import InvalidInput, NotFound, SpecError
from modelfleet.manifest import MANIFEST_FILE, Manifest, Source, TensorField
from modelfleet.types import Datatype


def _parse_request(raw: bytes) -> tuple[str, str, dict[str, str], bytes]:
    parts: dict[str, object] = {"headers": {}, "body": b"", "url": b""}

    class Sink:
        def on_url(self, url: bytes) -> None:
            parts["url"] = url

        def on_header(self, name: bytes, value: bytes) -> None:
            parts["headers"][name.decode().lower()] = value.decode()  # type: ignore[index]

        def on_body(self, body: bytes) -> None:
            parts["body"] = body

    parser = httptools.HttpRequestParser(Sink())
    parser.feed_data(raw)
    return parser.get_method().decode(), parts["url"].decode(), parts["headers"], parts["body"]  # type: ignore[union-attr,return-value]


def test_parse_url() -> None:
    origin, host, path = parse_url("https://user@example.com:8443/v1/predict?x=1")
    assert (origin.host, origin.port, origin.tls, host, path) == (
        "example.com",
        8443,
        True,
        "example.com:8443",
        "/v1/predict?x=1",
    )
    origin, host, path = parse_url("http://10.0.0.5")
    assert (origin.port, origin.tls, host, path) == (80, False, "10.0.0.5", "/")
    for bad in ("ftp://x", "localhost:8000", "http://", "http://h:99999"):
        with pytest.raises(InvalidInput):
            parse_url(bad)


def test_encoded_request_is_valid_http() -> None:
    raw = encode_request("POST", "h:8000", "/v2/models/m/infer", {"Authorization": "Bearer t"}, b'{"a": 1}')
    method, url, headers, body = _parse_request(raw)
    assert (method, url, body) == ("POST", "/v2/models/m/infer", b'{"a": 1}')
    assert headers["host"] == "h:8000" and headers["content-length"] == "8"
    assert headers["content-type"] == "application/json" and headers["authorization"] == "Bearer t"
    with pytest.raises(InvalidInput):
        encode_request("GET", "h", "/", {"X": "a\r\nInjected: 1"}, None)


def test_v2_bodies_from_metadata() -> None:
    metadata = {
        "name": "m",
        "inputs": [
            {"name": "text", "datatype": "BYTES", "shape": [-1]},
            {"name": "ids", "datatype": "INT64", "shape": [-1, -1]},
            {"name": "x", "datatype": "FP32", "shape": [-1, 4]},
            {"name": "flag", "datatype": "BOOL", "shape": [1]},
        ],
    }
    bodies = v2_bodies(metadata, ["one", "two", "three"], seed=0)
    assert len(bodies) == 3  # one body per sample
    request = json.loads(bodies[1])
    text, ids, x, flag = request["inputs"]
    assert text == {"name": "text", "shape": [1], "datatype": "BYTES", "data": ["two"]}
    assert ids["shape"] == [1, 16] and len(ids["data"]) == 16 and all(isinstance(v, int) for v in ids["data"])
    assert x["shape"] == [1, 4] and all(isinstance(v, float) for v in x["data"])
    assert flag["shape"] == [1] and isinstance(flag["data"][0], bool)
    assert v2_bodies(metadata, ["one"], seed=5) == v2_bodies(metadata, ["one"], seed=5)  # reproducible


def test_numeric_models_get_several_random_bodies() -> None:
    bodies = v2_bodies({"inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}]}, ["s"], seed=1)
    assert len(set(bodies)) == 16


@pytest.mark.parametrize(
    "metadata",
    [
        {"name": "m"},
        {"inputs": [{"name": "x"}]},
        {"inputs": [{"name": "x", "datatype": "FP128", "shape": [1]}]},
    ],
)
def test_bad_metadata_is_bad_input(metadata: dict[str, object]) -> None:
    with pytest.raises(InvalidInput):
        v2_bodies(metadata, ["s"], 0, "m")


def test_http_endpoint_renders_the_template_per_sample() -> None:
    spec = HttpEndpointSpec(
        url="http://h:9000/predict", body_template='{"text": {{sample}}, "k": 3}', headers={"X-Key": "1"}
    )
    endpoint = http_endpoint(spec, ['say "hi"', "two"], {"Authorization": "t"}, True)
    assert endpoint.name == "POST /predict" and len(endpoint.requests) == 2
    _, _, headers, body = _parse_request(endpoint.requests[0])
    assert json.loads(body) == {"text": 'say "hi"', "k": 3}
    assert headers["x-key"] == "1" and headers["authorization"] == "t"
    with pytest.raises(InvalidInput, match="valid JSON"):
        http_endpoint(
            HttpEndpointSpec(url="http://h/p", body_template='{"text": "{{sample}}"}'), ["a"], {}, True
        )
    bodiless = http_endpoint(HttpEndpointSpec(url="http://h/health", method="GET"), ["a"], {}, True)
    assert _parse_request(bodiless.requests[0])[0] == "GET"


def test_model_options() -> None:
    assert parse_model_option("bert").model_dump() == {"name": "bert", "version": None, "weight": 1.0}
    assert parse_model_option("bert:2=3.5").model_dump() == {"name": "bert", "version": "2", "weight": 3.5}
    for bad in ("bert@prod", "bert=0", "bert=x", "-bad", "bert=nan"):
        with pytest.raises(InvalidInput):
            parse_model_option(bad)


def _artifact(folder: Path, name: str) -> Path:
    folder.mkdir(parents=True)
    manifest = Manifest(
        name=name,
        created_at=datetime.now(UTC).isoformat(),
        source=Source(kind="onnx", path="model.onnx", sha256="0" * 64),
        inputs=[TensorField(name="x", datatype=Datatype.FP32, shape=[-1, 4])],
        outputs=[TensorField(name="y", datatype=Datatype.FP32, shape=[-1, 3])],
        files={},
    )
    (folder / MANIFEST_FILE).write_bytes(manifest.to_json_bytes())
    return folder


def test_serve_spec_adapter_reads_address_and_names(tmp_path: Path) -> None:
    _artifact(tmp_path / "artifacts" / "iris", "iris-classifier")
    spec_path = tmp_path / "serve.yaml"
    spec_path.write_text(
        "server: {host: 0.0.0.0, port: 8123}\n"
        "models:\n  - path: artifacts/iris\n  - path: artifacts/iris\n    name: renamed\n  - ref: bert@prod\n"
    )
    targets = targets_from_spec_file(spec_path)
    assert [(t.base_url, t.name) for t in targets] == [
        ("http://127.0.0.1:8123", "iris-classifier"),
        ("http://127.0.0.1:8123", "renamed"),
        ("http://127.0.0.1:8123", "bert"),
    ]
    bench = BenchSpec(serve_spec=spec_path, target="http://gateway:80", mode="seq")
    assert {t.base_url for t in model_targets(bench)} == {"http://gateway:80"}


def test_spec_adapter_errors(tmp_path: Path) -> None:
    with pytest.raises(NotFound):
        targets_from_spec_file(tmp_path / "none.yaml")
    (tmp_path / "bad.yaml").write_text("models: [{path: x, ref: y}]\nunknown_key: 1\n")
    with pytest.raises(SpecError):
        targets_from_spec_file(tmp_path / "bad.yaml")
    (tmp_path / "missing.yaml").write_text("models: [{path: nowhere}]\n")
    with pytest.raises(NotFound, match=r"manifest\.json is missing"):
        targets_from_spec_file(tmp_path / "missing.yaml")


def test_v2_bodies_for_question_answering_pair_each_question_with_its_context() -> None:
    from modelfleet.bench.samples import BUILTIN_QA_PAIRS

    metadata = {
        "name": "qa",
        "inputs": [
            {"name": "question", "datatype": "BYTES", "shape": [-1]},
            {"name": "context", "datatype": "BYTES", "shape": [-1]},
        ],
    }
    bodies = v2_bodies(metadata, ["a sentence that is no question"], seed=0)
    assert len(bodies) == len(BUILTIN_QA_PAIRS)
    seen = []
    for body in bodies:
        inputs = {tensor["name"]: tensor for tensor in json.loads(body)["inputs"]}
        assert inputs["question"]["shape"] == inputs["context"]["shape"] == [1]
        seen.append((inputs["question"]["data"][0], inputs["context"]["data"][0]))
    assert seen == list(BUILTIN_QA_PAIRS)  # every pair once, question and context kept together
    assert any(len(context) > 800 for _, context in seen)  # long contexts: windows on the server
