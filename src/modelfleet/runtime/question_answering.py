"""Extractive question answering around a `*ForQuestionAnswering` graph, as the transformers pipeline does it.

Each (question, context) pair is tokenized with the context split into overlapping windows (every
window holds the whole question; `tokenizers`' only_second truncation with a stride and its
overflowing encodings, the same call the pipeline made). All windows of a batch are grouped by
length and run; per window the best span is taken as the pipeline's `select_starts_ends` takes it
(softmax over the context tokens and CLS, CLS then zeroed, start <= end, end - start <
max_answer_tokens, the first maximum in (start, end) order), and per item the best window wins (the
first on a tie). Start and end widen to whole words and become character offsets into the context.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from modelfleet.errors import InvalidInput
from modelfleet.manifest import Manifest
from modelfleet.runtime.text import TextEncoder
from modelfleet.types import Arrays

# The pipeline's value for a masked logit (not -inf: a row with nothing allowed still normalises).
_MASKED_LOGIT = np.float32(-10000.0)
# Characters a question may have before it is refused without tokenizing it (per token it may keep),
# so checking a question's token count costs at most this much tokenizer time.
_QUESTION_CHARS_PER_TOKEN = 16
DEFAULT_MAX_ANSWER_TOKENS = 15  # the pipeline's max_answer_len
# Windows per graph run. A long context multiplies one item into many windows, all of one length, so a
# length group alone would not bound a run's activation memory (BERT-base: ~1.2 MiB per 384-token
# window per layer output); runs of at most this many windows do.
MAX_WINDOWS_PER_RUN = 64
# Characters one context may have. A context is searched whole, so its length multiplies the work: 25,000
# characters (~6,000 tokens of English) is ~27 windows of 384 tokens with the pipeline's stride of 128, a
# few seconds of BERT-base on a CPU core; without a bound a 1 MiB context (the element limit) held a model
# for minutes. SQuAD's contexts average ~750 characters.
MAX_CONTEXT_CHARS = 25_000


@dataclass(frozen=True, slots=True)
class QaSettings:
    """The pre- and post-processing a question answering manifest records."""

    tokenizer_file: Path
    max_length_tokens: int
    stride_tokens: int
    graph_inputs: tuple[str, ...]
    max_answer_tokens: int
    question: str = "question"
    context: str = "context"
    start_logits: str = "start_logits"
    end_logits: str = "end_logits"

    @classmethod
    def from_manifest(cls, manifest: Manifest, artifact_dir: Path) -> QaSettings:
        tokenization = manifest.preprocessing
        assert tokenization is not None, "a question-answering manifest has preprocessing"
        question, context = tokenization.text_inputs
        return cls(
            tokenizer_file=artifact_dir / tokenization.tokenizer_file,
            max_length_tokens=tokenization.max_length_tokens,
            stride_tokens=tokenization.stride_tokens,
            graph_inputs=tuple(tokenization.graph_inputs),
            max_answer_tokens=manifest.postprocessing.max_answer_tokens or DEFAULT_MAX_ANSWER_TOKENS,
            question=question,
            context=context,
        )


class QuestionAnswering:
    """V2 `question`, `context` (BYTES) → `answer` (BYTES), `score` (FP32), `start`, `end` (INT64)."""

    def __init__(self, settings: QaSettings, length_grouping: bool = True) -> None:
        self.settings = settings
        self._encoder = TextEncoder(
            settings.tokenizer_file,
            settings.max_length_tokens,
            settings.graph_inputs,
            stride_tokens=settings.stride_tokens,
            length_grouping=length_grouping,
        )
        self._cls_id = _cls_token_id(settings.tokenizer_file)
        self._max_question_chars = settings.max_length_tokens * _QUESTION_CHARS_PER_TOKEN

    def validate(self, inputs: Arrays) -> Arrays:
        """Both texts present, as many contexts as questions, UTF-8, non-empty; questions short enough.

        O(bytes): contexts are decoded only (all of a context is searched, so nothing is cut);
        questions are tokenized, each bounded first by a character count.
        """
        names = self.settings.question, self.settings.context
        for name in names:
            if name not in inputs:
                raise InvalidInput(
                    f"input '{name}' is missing: question answering takes {names[0]} and {names[1]}"
                )
        questions, contexts = inputs[names[0]], inputs[names[1]]
        if contexts.size != questions.size:
            raise InvalidInput(
                f"input '{names[1]}' holds {contexts.size} texts but '{names[0]}' holds {questions.size}: "
                "each question needs its own context"
            )
        prepared_questions = self._encoder.prepare(questions, names[0], cut=False).ravel()
        prepared_contexts = self._encoder.prepare(contexts, names[1], cut=False).ravel()
        for name, texts in ((names[0], prepared_questions), (names[1], prepared_contexts)):
            for index, text in enumerate(texts):
                if not text:  # the pipeline refuses these too
                    raise InvalidInput(f"input '{name}' item {index} is empty")
        for index, text in enumerate(prepared_contexts):
            if len(text) > MAX_CONTEXT_CHARS:
                raise InvalidInput(
                    f"input '{names[1]}' item {index} has {len(text)} characters, over the limit of "
                    f"{MAX_CONTEXT_CHARS} per context (question answering searches a context whole); "
                    "split it and ask each part"
                )
        for index, text in enumerate(prepared_questions):
            if len(text) > self._max_question_chars:
                raise InvalidInput(self._long_question(index, f"{len(text)} characters"))
        limit = self._encoder.max_first_tokens
        for index, tokens in enumerate(self._encoder.first_text_tokens(list(prepared_questions))):
            if tokens > limit:
                raise InvalidInput(self._long_question(index, f"{tokens} tokens"))
        return {names[0]: prepared_questions, names[1]: prepared_contexts}

    def _long_question(self, index: int, size: str) -> str:
        limit = self._encoder.max_first_tokens
        return (
            f"input '{self.settings.question}' item {index} has {size}; a question may have at most "
            f"{limit} tokens, so that each window of {self.settings.max_length_tokens} tokens (artifact "
            f"preprocessing.max_length_tokens) keeps more than the {self.settings.stride_tokens} tokens of "
            "context the windows overlap by (preprocessing.stride_tokens)"
        )

    def predict(self, run: Any, inputs: Arrays) -> Arrays:
        questions = [str(q) for q in inputs[self.settings.question].ravel()]
        contexts = [str(c) for c in inputs[self.settings.context].ravel()]
        per_item = self._encoder.encode_windows(questions, contexts)
        windows = [window for item in per_item for window in item]
        spans = self._best_spans(run, windows)
        count = len(questions)
        answers = np.empty(count, dtype=object)
        scores = np.zeros(count, dtype=np.float32)
        starts = np.zeros(count, dtype=np.int64)
        ends = np.zeros(count, dtype=np.int64)
        first = 0
        for item, item_windows in enumerate(per_item):
            last = first + len(item_windows)
            # argmax: the first window on a tie, as the pipeline's stable sort by score keeps it.
            best = first + int(np.argmax(spans.score[first:last]))
            start_char, end_char = _char_span(windows[best], int(spans.start[best]), int(spans.end[best]))
            answers[item] = contexts[item][start_char:end_char].encode()
            scores[item] = spans.score[best]
            starts[item], ends[item] = start_char, end_char
            first = last
        return {"answer": answers, "score": scores, "start": starts, "end": ends}

    def window_feeds(self, pairs: Sequence[tuple[str, str]]) -> list[dict[str, np.ndarray[Any, Any]]]:
        """The graph feeds `predict` would run for these (question, context) pairs."""
        per_item = self._encoder.encode_windows([q for q, _ in pairs], [c for _, c in pairs])
        return [feed for _, feed in self._feeds([window for item in per_item for window in item])]

    def _feeds(self, windows: Sequence[Any]) -> list[tuple[list[int], dict[str, np.ndarray[Any, Any]]]]:
        """Length groups of windows, each cut into runs of at most MAX_WINDOWS_PER_RUN."""
        runs = []
        for indices, feed in self._encoder.group_feeds(
            [w.ids for w in windows], [w.type_ids for w in windows]
        ):
            for first in range(0, len(indices), MAX_WINDOWS_PER_RUN):
                part = slice(first, first + MAX_WINDOWS_PER_RUN)
                runs.append((indices[part], {name: array[part] for name, array in feed.items()}))
        return runs

    def _best_spans(self, run: Any, windows: Sequence[Any]) -> _Spans:
        """Every window's best (start token, end token, score), its windows run in length groups."""
        spans = _Spans.empty(len(windows))
        for indices, feed in self._feeds(windows):
            results = run(feed)
            allowed = self._allowed(feed["input_ids"], [windows[i] for i in indices])
            start, end, score = best_span(
                results[self.settings.start_logits],
                results[self.settings.end_logits],
                allowed,
                self.settings.max_answer_tokens,
            )
            spans.start[indices], spans.end[indices], spans.score[indices] = start, end, score
        return spans

    def _allowed(self, input_ids: np.ndarray[Any, Any], windows: Sequence[Any]) -> np.ndarray[Any, Any]:
        """[rows, width] True where a token may start or end an answer: the context's tokens, and CLS
        (the pipeline keeps CLS in the softmax, for models that point there when there is no answer)."""
        first = np.empty(len(windows), dtype=np.int64)
        last = np.empty(len(windows), dtype=np.int64)
        for row, window in enumerate(windows):
            sequence_ids = window.sequence_ids
            if 1 not in sequence_ids:  # a context of whitespace or marks only: no token, no span
                first[row], last[row] = 1, 0
                continue
            first[row] = sequence_ids.index(1)  # a window's context tokens are contiguous
            last[row] = len(sequence_ids) - 1 - sequence_ids[::-1].index(1)
        positions = np.arange(input_ids.shape[1])
        allowed = (positions >= first[:, None]) & (positions <= last[:, None])
        if self._cls_id is not None:
            allowed |= input_ids == self._cls_id
        return allowed


@dataclass(slots=True)
class _Spans:
    start: np.ndarray[Any, Any]
    end: np.ndarray[Any, Any]
    score: np.ndarray[Any, Any]

    @classmethod
    def empty(cls, count: int) -> _Spans:
        return cls(np.zeros(count, np.int64), np.zeros(count, np.int64), np.zeros(count, np.float32))


def best_span(
    start_logits: np.ndarray[Any, Any],
    end_logits: np.ndarray[Any, Any],
    allowed: np.ndarray[Any, Any],
    max_answer_tokens: int,
) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """Per row of [rows, width] logits: the best span's start and end token and its probability.

    The pipeline scores every (start, end) pair in a [width, width] matrix; only pairs with
    0 <= end - start < max_answer_tokens can win, so this scores [width, max_answer_tokens] per row
    (float32 products as there, so equal logits give equal scores) and takes the first maximum
    in the same (start, end) order.
    """
    rows, width = start_logits.shape
    start = _masked_softmax(start_logits, allowed)
    end = _masked_softmax(end_logits, allowed)
    start[:, 0] = 0.0  # CLS takes part in the softmax but never starts or ends an answer
    end[:, 0] = 0.0
    padded = np.concatenate([end, np.zeros((rows, max_answer_tokens - 1), np.float32)], axis=1)
    ends_ahead = sliding_window_view(padded, max_answer_tokens, axis=1)[:, :width]  # [rows, width, K]
    candidates = start[:, :, None] * ends_ahead
    flat = candidates.reshape(rows, -1).argmax(axis=1)
    best_start, offset = np.divmod(flat, max_answer_tokens)
    score = candidates.reshape(rows, -1)[np.arange(rows), flat]
    return best_start.astype(np.int64), (best_start + offset).astype(np.int64), score.astype(np.float32)


def _masked_softmax(logits: np.ndarray[Any, Any], allowed: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    masked = np.where(allowed, logits.astype(np.float32, copy=False), _MASKED_LOGIT)
    exp = np.exp(masked - masked.max(axis=1, keepdims=True))
    result: np.ndarray[Any, Any] = exp / exp.sum(axis=1, keepdims=True)
    return result


def _char_span(window: Any, start: int, end: int) -> tuple[int, int]:
    """Token span → character span in the context, widened to whole words as the pipeline does
    (`align_to_words`); the tokens' own offsets where a token belongs to no word."""
    start_word, end_word = window.token_to_word(start), window.token_to_word(end)
    if start_word is None or end_word is None:
        return int(window.offsets[start][0]), int(window.offsets[end][1])
    start_chars = window.word_to_chars(start_word, 1)
    end_chars = window.word_to_chars(end_word, 1)
    if start_chars is None or end_chars is None:
        return int(window.offsets[start][0]), int(window.offsets[end][1])
    return int(start_chars[0]), int(end_chars[1])


def _cls_token_id(tokenizer_file: Path) -> int | None:
    """The id the pair template starts with when it is a special token (BERT's [CLS], RoBERTa's <s>)."""
    processor = json.loads(tokenizer_file.read_text(encoding="utf-8")).get("post_processor") or {}
    kind = processor.get("type")
    if kind in ("BertProcessing", "RobertaProcessing"):
        return int(processor["cls"][1])
    if kind == "TemplateProcessing":
        pair = processor.get("pair") or []
        special = pair[0].get("SpecialToken") if pair else None
        if special is not None:
            return int(processor["special_tokens"][special["id"]]["ids"][0])
    return None


def make_question_answering(
    manifest: Manifest, artifact_dir: Path, length_grouping: bool = True
) -> QuestionAnswering:
    return QuestionAnswering(QaSettings.from_manifest(manifest, artifact_dir), length_grouping)
