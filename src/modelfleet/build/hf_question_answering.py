"""Hugging Face `*ForQuestionAnswering` folder → ONNX graph of start/end logits, served with span decoding.

The graph takes `input_ids`, `attention_mask` (and `token_type_ids` when the model takes them), int64
[batch, sequence], and returns `start_logits`, `end_logits` [batch, sequence]. The server tokenizes
(question, context) pairs into windows and decodes spans (`runtime/question_answering.py`).

transformers 5 removed the "question-answering" pipeline, so the reference is that pipeline's
algorithm put together from what transformers still ships: the tokenizer call it made (only_second
truncation, stride, overflowing tokens, offsets), the torch model run on each window alone, its
`select_starts_ends` (kept in `transformers.pipelines.document_question_answering`, copied there from
the question answering pipeline) and its word alignment of the answer. The artifact side runs the
server's own processing on the ONNX session.
"""

from __future__ import annotations

import inspect
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from modelfleet.build.exported import ExportedModel
from modelfleet.build.hf_detect import HfDetection
from modelfleet.build.huggingface import (
    TOKENIZER_FILE,
    export_onnx_module,
    read_text_settings,
    write_tokenizer,
)
from modelfleet.build.messages import first_line
from modelfleet.build.options import MAX_PROBABILITY_DIFF, BuildOptions
from modelfleet.build.samples import VERIFICATION_QA
from modelfleet.errors import InvalidInput
from modelfleet.manifest import Postprocessing, TensorField, Tokenization, Verification
from modelfleet.runtime.question_answering import (
    DEFAULT_MAX_ANSWER_TOKENS,
    QaSettings,
    QuestionAnswering,
)
from modelfleet.types import Datatype, Progress

# The pipeline's defaults: max_seq_len = min(model_max_length, 384), doc_stride = min(max_seq_len // 2, 128).
PIPELINE_MAX_LENGTH_TOKENS = 384
PIPELINE_STRIDE_TOKENS = 128
QA_INPUTS = ("question", "context")
_OUTPUTS = ("start_logits", "end_logits")


@dataclass(frozen=True, slots=True)
class Answer:
    answer: str
    score: float
    start: int
    end: int
    windows: int = 1  # how many windows the context was split into (reference side)


def export_question_answering(
    folder: Path, work_dir: Path, options: BuildOptions, report: Progress, detection: HfDetection
) -> ExportedModel:
    """Export the head's logits to `work_dir/model.onnx`; verification compares answers with the reference."""
    text_settings = read_text_settings(folder)
    max_length = min(text_settings.max_length_tokens, PIPELINE_MAX_LENGTH_TOKENS)
    stride = min(max_length // 2, PIPELINE_STRIDE_TOKENS)
    report("loading source")
    model, hf_tokenizer = _load(folder)
    graph_inputs = _graph_inputs(model)
    tokenizer_path = write_tokenizer(folder, work_dir / TOKENIZER_FILE, max_length)
    samples = _load_pairs(options.samples) if options.samples else list(VERIFICATION_QA)
    settings = QaSettings(
        tokenizer_file=tokenizer_path,
        max_length_tokens=max_length,
        stride_tokens=stride,
        graph_inputs=tuple(graph_inputs),
        max_answer_tokens=DEFAULT_MAX_ANSWER_TOKENS,
    )
    feeds = QuestionAnswering(settings).window_feeds(samples)
    report("exporting")
    onnx_path = work_dir / "model.onnx"
    exporter = export_onnx_module(
        _make_logits_module(model),
        feeds[0],
        graph_inputs,
        {name: {0: "batch", 1: "sequence"} for name in _OUTPUTS},
        onnx_path,
        folder.name,
    )

    def verify(session: Any, artifact_dir: Path) -> list[Verification]:
        expected = pipeline_answers(model, hf_tokenizer, samples, max_length, stride, graph_inputs)
        served = QuestionAnswering(
            QaSettings(
                tokenizer_file=artifact_dir / TOKENIZER_FILE,
                max_length_tokens=max_length,
                stride_tokens=stride,
                graph_inputs=tuple(graph_inputs),
                max_answer_tokens=DEFAULT_MAX_ANSWER_TOKENS,
            )
        )
        return answer_checks(
            expected,
            {
                "batched": _served_answers(served, session, samples),
                "one_by_one": [a for pair in samples for a in _served_answers(served, session, [pair])],
            },
            samples,
        )

    return ExportedModel(
        onnx_path=onnx_path,
        task="question-answering",
        inputs=[TensorField(name=name, datatype=Datatype.BYTES, shape=[-1]) for name in QA_INPUTS],
        outputs=[
            TensorField(name="answer", datatype=Datatype.BYTES, shape=[-1]),
            TensorField(name="score", datatype=Datatype.FP32, shape=[-1]),
            TensorField(name="start", datatype=Datatype.INT64, shape=[-1]),
            TensorField(name="end", datatype=Datatype.INT64, shape=[-1]),
        ],
        verify=verify,
        calibration_feeds=feeds,
        preprocessing=Tokenization(
            tokenizer_file=TOKENIZER_FILE,
            max_length_tokens=max_length,
            graph_inputs=graph_inputs,
            text_inputs=list(QA_INPUTS),
            stride_tokens=stride,
        ),
        postprocessing=Postprocessing(
            max_answer_tokens=DEFAULT_MAX_ANSWER_TOKENS, handle_impossible_answer=False
        ),
        side_files={TOKENIZER_FILE: tokenizer_path},
        libraries=("torch", "transformers", "tokenizers", "onnx"),
        extra={
            "exporter": exporter,
            "onnx_opset": 17 if exporter == "torchscript" else 18,
            "reference": "transformers question-answering pipeline algorithm (select_starts_ends)",
            "verification_samples": "custom" if options.samples else "built-in question/context pairs",
        },
        detected=detection.describe(),
    )


def pipeline_answers(
    model: Any,
    hf_tokenizer: Any,
    samples: list[tuple[str, str]],
    max_length: int,
    stride: int,
    graph_inputs: list[str],
) -> list[Answer]:
    """The question answering pipeline's answers (top_k 1, max_answer_len 15, no impossible answer)."""
    import torch
    from transformers.pipelines.document_question_answering import select_starts_ends

    answers = []
    for question, context in samples:
        encoded = hf_tokenizer(
            text=question,
            text_pair=context,
            padding="do_not_pad",
            truncation="only_second",
            max_length=max_length,
            stride=stride,
            return_token_type_ids=True,
            return_overflowing_tokens=True,
            return_offsets_mapping=True,
            return_special_tokens_mask=True,
        )
        candidates: list[Answer] = []
        for span in range(len(encoded["input_ids"])):
            ids = encoded["input_ids"][span]
            # p_mask: 1 where a token cannot be in the answer; CLS is kept (pipeline.preprocess).
            p_mask = np.array([tok != 1 for tok in encoded.sequence_ids(span)], dtype=np.int64)
            p_mask[np.array(ids) == hf_tokenizer.cls_token_id] = 0
            with torch.no_grad():
                output = model(**{name: torch.tensor([encoded[name][span]]) for name in graph_inputs})
            starts, ends, scores, _ = select_starts_ends(
                output.start_logits.numpy(),
                output.end_logits.numpy(),
                p_mask[None],
                np.array([encoded["attention_mask"][span]]),
                max_answer_len=DEFAULT_MAX_ANSWER_TOKENS,
            )
            encoding = encoded.encodings[span]
            for start, end, score in zip(starts, ends, scores, strict=True):
                start_char, end_char = _pipeline_indices(encoding, int(start), int(end))
                candidates.append(
                    Answer(
                        context[start_char:end_char],
                        float(score),
                        start_char,
                        end_char,
                        len(encoded["input_ids"]),
                    )
                )
        # Python's sort is stable: on equal scores the earlier window wins.
        answers.append(sorted(candidates, key=lambda a: a.score, reverse=True)[0])
    return answers


def _pipeline_indices(encoding: Any, start: int, end: int) -> tuple[int, int]:
    """QuestionAnsweringPipeline.get_indices with align_to_words=True."""
    try:
        start_char = encoding.word_to_chars(encoding.token_to_word(start), sequence_index=1)[0]
        end_char = encoding.word_to_chars(encoding.token_to_word(end), sequence_index=1)[1]
    except Exception:
        start_char, end_char = encoding.offsets[start][0], encoding.offsets[end][1]
    return int(start_char), int(end_char)


def answer_checks(
    expected: list[Answer], served: dict[str, list[Answer]], samples: list[tuple[str, str]]
) -> list[Verification]:
    """Answers (text and offsets) must agree on every sample in every batching; scores within
    MAX_PROBABILITY_DIFF. `served` holds the artifact's answers per way of batching them."""
    agreements, score_diffs = {}, {}
    for batching, answers in served.items():
        same = [
            e.answer == s.answer and e.start == s.start and e.end == s.end
            for e, s in zip(expected, answers, strict=True)
        ]
        agreements[batching] = sum(same) / len(same)
        score_diffs[batching] = max(abs(e.score - s.score) for e, s in zip(expected, answers, strict=True))
    agreement, score_diff = min(agreements.values()), max(score_diffs.values())
    details = {
        "windows": float(sum(e.windows for e in expected)),
        "max_windows_per_sample": float(max(e.windows for e in expected)),
        **{f"answer_agreement_{batching}": value for batching, value in agreements.items()},
        **{f"max_abs_score_diff_{batching}": value for batching, value in score_diffs.items()},
    }
    return [
        Verification(
            samples=len(samples),
            metric="answer_agreement",
            value=agreement,
            threshold=1.0,
            passed=agreement == 1.0,
            details=details,
        ),
        Verification(
            samples=len(samples),
            metric="max_abs_score_diff",
            value=score_diff,
            threshold=MAX_PROBABILITY_DIFF,
            passed=score_diff <= MAX_PROBABILITY_DIFF,
        ),
    ]


def _served_answers(
    processing: QuestionAnswering, session: Any, samples: list[tuple[str, str]]
) -> list[Answer]:
    """The server's answers to `samples` given as one request (windows of different lengths share runs)."""
    from modelfleet.build.verify import run_session

    inputs = {
        "question": np.array([q.encode() for q, _ in samples], dtype=object),
        "context": np.array([c.encode() for _, c in samples], dtype=object),
    }
    outputs = processing.predict(lambda feed: run_session(session, feed), processing.validate(inputs))
    return [
        Answer(bytes(answer).decode(), float(score), int(start), int(end))
        for answer, score, start, end in zip(
            outputs["answer"], outputs["score"], outputs["start"], outputs["end"], strict=True
        )
    ]


def _load(folder: Path) -> tuple[Any, Any]:
    import transformers

    hf_logging: Any = transformers.logging  # untyped module functions
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        model = transformers.AutoModelForQuestionAnswering.from_pretrained(str(folder), local_files_only=True)
        tokenizer = transformers.AutoTokenizer.from_pretrained(
            str(folder), local_files_only=True, use_fast=True
        )
    except Exception as exc:  # corrupt weights, unknown architecture, missing files
        raise InvalidInput(f"cannot load the model in {folder}: {first_line(exc)}") from None
    if not getattr(tokenizer, "is_fast", False):
        raise InvalidInput(f"{folder.name}: question answering needs a fast tokenizer (tokenizer.json)")
    return model.eval(), tokenizer


def _graph_inputs(model: Any) -> list[str]:
    parameters = inspect.signature(model.forward).parameters
    if "attention_mask" not in parameters:
        raise InvalidInput(f"{type(model).__name__} takes no attention_mask; cannot batch padded windows")
    names = ["input_ids", "attention_mask"]
    if "token_type_ids" in parameters:  # a pair's segments matter to the head: always pass them
        names.append("token_type_ids")
    return names


def _make_logits_module(model: Any) -> Any:
    import torch

    class LogitsModule(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any = None) -> Any:
            kwargs = {"input_ids": input_ids, "attention_mask": attention_mask}
            if token_type_ids is not None:
                kwargs["token_type_ids"] = token_type_ids
            output = self.model(**kwargs)
            return output.start_logits, output.end_logits

    return LogitsModule().eval()


def _load_pairs(path: Path) -> list[tuple[str, str]]:
    """Verification pairs from a .json file: a list of {"question": ..., "context": ...} objects."""
    if not path.is_file():
        raise InvalidInput(f"samples file {path} does not exist")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidInput(f"samples file {path} is not readable JSON: {first_line(exc)}") from None
    pairs = [
        (item["question"], item["context"])
        for item in (data if isinstance(data, list) else [])
        if isinstance(item, dict)
        and isinstance(item.get("question"), str)
        and isinstance(item.get("context"), str)
    ]
    if not pairs or len(pairs) != len(data):
        raise InvalidInput(
            f'samples file {path} must hold a JSON list of {{"question": ..., "context": ...}} objects'
        )
    return pairs
