"""Question answering end to end: a tiny random BertForQuestionAnswering built, verified against the
transformers pipeline's algorithm, and served over real V2 HTTP (tritonclient and plain JSON)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from tests.support.qa_model import write_qa_model
from tests.support.servers import RunningServer, serve

from modelfleet.build import BuildOptions, build_artifact
from modelfleet.build.hf_question_answering import pipeline_answers
from modelfleet.build.samples import VERIFICATION_QA
from modelfleet.manifest import read_manifest
from modelfleet.runtime.question_answering import QaSettings, QuestionAnswering

LONG_QUESTION, LONG_CONTEXT = VERIFICATION_QA[6]  # 300 tokens: several 128-token windows


@pytest.fixture(scope="session")
def qa_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_qa_model(tmp_path_factory.mktemp("qa-source") / "tiny-bert-qa")


@pytest.fixture(scope="session")
def qa_artifact(tmp_path_factory: pytest.TempPathFactory, qa_folder: Path) -> Path:
    output = tmp_path_factory.mktemp("artifacts") / "qa"
    build_artifact(qa_folder, output, BuildOptions(name="qa"))
    return output


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, qa_artifact: Path) -> Iterator[RunningServer]:
    folder = tmp_path_factory.mktemp("qa-srv")
    with serve(["--model", str(qa_artifact)], folder) as running:
        yield running


def test_build_records_processing_and_agrees_with_the_pipeline(qa_artifact: Path) -> None:
    manifest = read_manifest(qa_artifact)
    assert manifest.task == "question-answering"
    assert manifest.extra["detected"] == "Hugging Face BertForQuestionAnswering folder"
    assert [f.name for f in manifest.inputs] == ["question", "context"]
    assert [(f.name, f.datatype.value) for f in manifest.outputs] == [
        ("answer", "BYTES"),
        ("score", "FP32"),
        ("start", "INT64"),
        ("end", "INT64"),
    ]
    tokenization = manifest.preprocessing
    assert tokenization is not None
    # 128 positions: the pipeline's max_seq_len min(128, 384) and doc_stride min(128 // 2, 128).
    assert (tokenization.max_length_tokens, tokenization.stride_tokens) == (128, 64)
    assert tokenization.graph_inputs == ["input_ids", "attention_mask", "token_type_ids"]
    assert manifest.postprocessing.max_answer_tokens == 15
    assert manifest.postprocessing.handle_impossible_answer is False
    checks = {v.metric: v for v in manifest.verification}
    assert checks["answer_agreement"].value == 1.0 and checks["answer_agreement"].passed
    assert checks["answer_agreement"].details["max_windows_per_sample"] >= 3  # the stride path ran
    assert checks["max_abs_score_diff"].value <= checks["max_abs_score_diff"].threshold == 1e-4


def test_windows_are_the_pipeline_tokenizer_windows(qa_artifact: Path, qa_folder: Path) -> None:
    from transformers import AutoTokenizer

    processing = QuestionAnswering(QaSettings.from_manifest(read_manifest(qa_artifact), qa_artifact))
    feeds = processing.window_feeds([(LONG_QUESTION, LONG_CONTEXT)])
    served = sorted(
        tuple(int(t) for t, m in zip(ids, mask, strict=True) if m)
        for feed in feeds
        for ids, mask in zip(feed["input_ids"], feed["attention_mask"], strict=True)
    )
    encoded = AutoTokenizer.from_pretrained(str(qa_folder))(
        LONG_QUESTION,
        LONG_CONTEXT,
        truncation="only_second",
        max_length=128,
        stride=64,
        return_overflowing_tokens=True,
    )
    assert len(encoded["input_ids"]) >= 3
    assert served == sorted(tuple(ids) for ids in encoded["input_ids"])


def test_served_answers_equal_the_pipeline_batched_over_v2(server: RunningServer, qa_folder: Path) -> None:
    from transformers import AutoModelForQuestionAnswering, AutoTokenizer

    pairs = [VERIFICATION_QA[0], (LONG_QUESTION, LONG_CONTEXT), VERIFICATION_QA[8], VERIFICATION_QA[3]]
    expected = pipeline_answers(
        AutoModelForQuestionAnswering.from_pretrained(str(qa_folder)).eval(),
        AutoTokenizer.from_pretrained(str(qa_folder)),
        pairs,
        128,
        64,
        ["input_ids", "attention_mask", "token_type_ids"],
    )
    client = triton.InferenceServerClient(server.address)
    tensors = []
    for position, name in enumerate(("question", "context")):
        tensor = triton.InferInput(name, [len(pairs)], "BYTES")
        tensor.set_data_from_numpy(np.array([pair[position].encode() for pair in pairs], dtype=object))
        tensors.append(tensor)
    result = client.infer("qa", tensors)
    answers = [bytes(a).decode() for a in result.as_numpy("answer")]
    starts, ends = result.as_numpy("start"), result.as_numpy("end")
    assert answers == [e.answer for e in expected]
    assert starts.tolist() == [e.start for e in expected] and ends.tolist() == [e.end for e in expected]
    assert np.allclose(result.as_numpy("score"), [e.score for e in expected], atol=1e-4)
    assert all(pair[1][s:e] == a for pair, s, e, a in zip(pairs, starts, ends, answers, strict=True))
    # A long context alone gets the same answer as in a batch with short ones (plain JSON this time).
    body = {
        "inputs": [
            {"name": "question", "datatype": "BYTES", "shape": [1], "data": [LONG_QUESTION]},
            {"name": "context", "datatype": "BYTES", "shape": [1], "data": [LONG_CONTEXT]},
        ]
    }
    alone = httpx.post(f"{server.url}/v2/models/qa/infer", json=body, timeout=30).json()
    outputs = {o["name"]: o["data"] for o in alone["outputs"]}
    assert outputs["answer"] == [answers[1]] and outputs["start"] == [int(starts[1])]


def _post(server: RunningServer, inputs: list[dict[str, object]]) -> httpx.Response:
    return httpx.post(f"{server.url}/v2/models/qa/infer", json={"inputs": inputs}, timeout=30)


def _texts(name: str, texts: list[str]) -> dict[str, object]:
    return {"name": name, "datatype": "BYTES", "shape": [len(texts)], "data": texts}


def test_bad_requests_are_400_naming_the_input(server: RunningServer) -> None:
    missing = _post(server, [_texts("question", ["Who?"])])
    assert missing.status_code == 400 and "'context'" in missing.json()["error"]
    mismatch = _post(server, [_texts("question", ["Who?", "What?"]), _texts("context", ["Nobody."])])
    assert mismatch.status_code == 400
    assert "'context'" in mismatch.json()["error"] and "'question'" in mismatch.json()["error"]
    empty = _post(server, [_texts("question", [""]), _texts("context", ["Nobody."])])
    assert empty.status_code == 400 and "input 'question' item 0 is empty" in empty.json()["error"]
    long_question = " ".join(["why"] * 61)  # 61 tokens: over 128 - 3 special - 64 stride - 1 = 60
    too_long = _post(server, [_texts("question", [long_question]), _texts("context", [LONG_CONTEXT])])
    error = too_long.json()["error"]
    assert too_long.status_code == 400 and "at most 60 tokens" in error and "stride_tokens" in error
    fits = _post(server, [_texts("question", [" ".join(["why"] * 60)]), _texts("context", [LONG_CONTEXT])])
    assert fits.status_code == 200, fits.text
    from modelfleet.runtime.question_answering import MAX_CONTEXT_CHARS

    huge = _post(server, [_texts("question", ["Who?"]), _texts("context", ["a " * MAX_CONTEXT_CHARS])])
    assert huge.status_code == 400 and f"limit of {MAX_CONTEXT_CHARS} per context" in huge.json()["error"]


def test_a_context_of_many_windows_runs_in_bounded_runs_and_matches_the_pipeline(
    qa_artifact: Path, qa_folder: Path
) -> None:
    from transformers import AutoModelForQuestionAnswering, AutoTokenizer

    from modelfleet.build.verify import open_session, run_session
    from modelfleet.runtime.question_answering import MAX_WINDOWS_PER_RUN

    context = " ".join(pair[1] for pair in VERIFICATION_QA) * 4  # ~2,900 tokens: ~45 windows
    pairs = [(LONG_QUESTION, context), ("Who wrote the novel?", context), VERIFICATION_QA[1]]
    processing = QuestionAnswering(QaSettings.from_manifest(read_manifest(qa_artifact), qa_artifact))
    session = open_session(qa_artifact / "model.onnx")
    rows: list[int] = []

    def run(feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        rows.append(len(feed["input_ids"]))
        return run_session(session, feed)

    inputs = {
        "question": np.array([q.encode() for q, _ in pairs], dtype=object),
        "context": np.array([c.encode() for _, c in pairs], dtype=object),
    }
    outputs = processing.predict(run, processing.validate(inputs))
    assert sum(rows) > MAX_WINDOWS_PER_RUN and max(rows) <= MAX_WINDOWS_PER_RUN
    expected = pipeline_answers(
        AutoModelForQuestionAnswering.from_pretrained(str(qa_folder)).eval(),
        AutoTokenizer.from_pretrained(str(qa_folder)),
        pairs,
        128,
        64,
        ["input_ids", "attention_mask", "token_type_ids"],
    )
    assert [bytes(a).decode() for a in outputs["answer"]] == [e.answer for e in expected]
    assert outputs["start"].tolist() == [e.start for e in expected]
    assert expected[0].windows > 40
