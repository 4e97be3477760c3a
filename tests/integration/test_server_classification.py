"""Classification heads served over real HTTP on 127.0.0.1, driven by tritonclient and plain JSON."""

from __future__ import annotations

import concurrent.futures
import json
import unicodedata
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
import yaml
from tests.support.servers import RunningServer, serve

from modelfleet.runtime.loader import load_model


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, sentiment_head_artifact: Path, ner_head_artifact: Path
) -> Iterator[RunningServer]:
    folder = tmp_path_factory.mktemp("srv")
    # A 20 ms batch window lets the concurrent clients below share runs on a busy machine.
    spec = {
        "models": [
            {
                "path": str(sentiment_head_artifact),
                "batching": {"max_delay_s": 0.02, "max_queue_wait_s": 10.0},
            },
            {"path": str(ner_head_artifact)},
        ]
    }
    spec_file = folder / "serve.yaml"
    spec_file.write_text(yaml.safe_dump(spec))
    with serve(["--spec", str(spec_file)], folder) as running:
        yield running


@pytest.fixture(scope="module")
def client(server: RunningServer) -> triton.InferenceServerClient:
    return triton.InferenceServerClient(server.address)


def _bytes_input(name: str, texts: list[str]) -> triton.InferInput:
    tensor = triton.InferInput(name, [len(texts)], "BYTES")
    tensor.set_data_from_numpy(np.array([t.encode() for t in texts], dtype=object))
    return tensor


def test_metadata_lists_the_optional_pair_input(client: triton.InferenceServerClient) -> None:
    metadata = client.get_model_metadata("sentiment")
    assert [i["name"] for i in metadata["inputs"]] == ["text", "text_pair"]
    assert [(o["name"], o["datatype"], o["shape"]) for o in metadata["outputs"]] == [
        ("label", "BYTES", [-1]),
        ("probabilities", "FP32", [-1, 2]),
    ]


def test_openapi_lets_a_request_leave_the_pair_out(server: RunningServer) -> None:
    document = httpx.get(f"{server.url}/openapi.json").json()
    body = document["paths"]["/v2/models/sentiment/infer"]["post"]["requestBody"]["content"][
        "application/json"
    ]
    inputs = body["schema"]["properties"]["inputs"]
    assert (inputs["minItems"], inputs["maxItems"]) == (1, 2)


def test_labels_and_probabilities_match_the_artifact_run_in_process(
    client: triton.InferenceServerClient, sentiment_head_artifact: Path
) -> None:
    texts = ["A wonderful, moving film.", "Dull.", "The plot made no sense at all and I left early."]
    pairs = ["I loved it.", "Really?", "Never again."]
    local = load_model(sentiment_head_artifact, intra_op_threads=1)
    for inputs, local_inputs in (
        ([_bytes_input("text", texts)], {"text": texts}),
        (
            [_bytes_input("text", texts), _bytes_input("text_pair", pairs)],
            {"text": texts, "text_pair": pairs},
        ),
    ):
        result = client.infer("sentiment", inputs)
        arrays = {k: np.array([t.encode() for t in v], dtype=object) for k, v in local_inputs.items()}
        expected = local.predict(local.validate_inputs(arrays))
        np.testing.assert_allclose(result.as_numpy("probabilities"), expected["probabilities"], atol=1e-5)
        assert list(result.as_numpy("label")) == list(expected["label"])
        assert set(result.as_numpy("label")) <= {b"negative", b"positive"}


@pytest.mark.parametrize(
    ("inputs", "fragment"),
    [
        (
            [("text", ["a", "b"]), ("text_pair", ["only one"])],
            "input 'text_pair' holds 1 items but 'text' holds 2",
        ),
        ([("text_pair", ["no text"])], "needs input 'text'"),
        ([("text", ["a"]), ("context", ["b"])], "has no input 'context'"),
    ],
)
def test_bad_pair_requests_are_400_naming_the_input(
    server: RunningServer, inputs: list[tuple[str, list[str]]], fragment: str
) -> None:
    body = {"inputs": [{"name": n, "shape": [len(d)], "datatype": "BYTES", "data": d} for n, d in inputs]}
    response = httpx.post(f"{server.url}/v2/models/sentiment/infer", json=body, timeout=30)
    assert response.status_code == 400
    assert fragment in response.json()["error"]


def test_non_utf8_text_pair_is_400(server: RunningServer) -> None:
    text = triton.InferInput("text", [1], "BYTES")
    text.set_data_from_numpy(np.array([b"fine"], dtype=object))
    pair = triton.InferInput("text_pair", [1], "BYTES")
    pair.set_data_from_numpy(np.array([b"\xff\xfe"], dtype=object))
    client = triton.InferenceServerClient(server.address)
    with pytest.raises(triton.InferenceServerException, match="input 'text_pair' item 0 is not UTF-8"):
        client.infer("sentiment", [text, pair])


def test_entities_are_json_lists_per_text(
    client: triton.InferenceServerClient, ner_head_artifact: Path
) -> None:
    texts = [
        "John Smith moved from Paris to Zürich in 2019, and later, with Anna-Lena Schmidt-Weber, "
        "on to Reykjavík, São Paulo and Ulaanbaatar before settling in Kraków.",
        "Hi",
    ]
    result = client.infer("ner", [_bytes_input("text", texts)])
    served = [json.loads(item) for item in result.as_numpy("entities")]
    local = load_model(ner_head_artifact, intra_op_threads=1)
    arrays = {"text": np.array([t.encode() for t in texts], dtype=object)}
    assert served == [json.loads(item) for item in local.predict(local.validate_inputs(arrays))["entities"]]
    assert served[0]
    for entity in served[0]:  # the span covers the word (the uncased vocabulary folds case and accents)
        assert _fold(texts[0][entity["start"] : entity["end"]]) == _fold(entity["word"])


def test_concurrent_requests_share_batches_and_each_gets_its_own_answer(server: RunningServer) -> None:
    texts = [f"review number {i}: {'great' if i % 2 else 'awful'} {'plot ' * (i % 5)}" for i in range(32)]

    def one(text: str) -> list[float]:
        body = {"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": [text]}]}
        response = httpx.post(f"{server.url}/v2/models/sentiment/infer", json=body, timeout=30)
        response.raise_for_status()
        outputs = {o["name"]: o["data"] for o in response.json()["outputs"]}
        return list(outputs["probabilities"])

    before = _batch_counts(server)
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        together = list(pool.map(one, texts))
    after = _batch_counts(server)
    alone = [one(text) for text in texts[:3]]
    np.testing.assert_allclose(together[:3], alone, atol=1e-5)
    batches, items = after[0] - before[0], after[1] - before[1]
    assert items == 32
    assert batches < 32  # some requests ran together


def _fold(text: str) -> str:
    decomposed = unicodedata.normalize("NFD", text.lower())
    return "".join(c for c in decomposed if not unicodedata.combining(c) and not c.isspace())


def _batch_counts(server: RunningServer) -> tuple[float, float]:
    metrics = httpx.get(f"{server.url}/metrics").text.splitlines()

    def value(prefix: str) -> float:
        return sum(float(line.split()[-1]) for line in metrics if line.startswith(prefix))

    return value('modelfleet_batch_size_count{model="sentiment"}'), value(
        'modelfleet_batch_size_sum{model="sentiment"}'
    )
