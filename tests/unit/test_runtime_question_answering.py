"""The server's span decoding against transformers' own `select_starts_ends` (the QA pipeline's)."""

from __future__ import annotations

import numpy as np
import pytest

from modelfleet.runtime.question_answering import best_span


@pytest.mark.parametrize("max_answer_tokens", [1, 3, 15])
def test_best_span_is_select_starts_ends_on_padded_batches(max_answer_tokens: int) -> None:
    from transformers.pipelines.document_question_answering import select_starts_ends

    rng = np.random.default_rng(max_answer_tokens)
    for _ in range(40):
        rows = int(rng.integers(1, 6))
        lengths = rng.integers(4, 48, size=rows)
        width = int(lengths.max())
        # Logits rounded to one decimal: many ties, so the order in which maxima are taken matters.
        start_logits = np.round(rng.normal(0, 2, (rows, width)), 1).astype(np.float32)
        end_logits = np.round(rng.normal(0, 2, (rows, width)), 1).astype(np.float32)
        allowed = np.zeros((rows, width), dtype=bool)
        contexts = []
        for row, length in enumerate(lengths):
            first = int(rng.integers(2, length - 1))  # CLS, a question, then the context up to a SEP
            allowed[row, 0] = True
            allowed[row, first : length - 1] = True
            contexts.append((first, int(length)))
        starts, ends, scores = best_span(start_logits, end_logits, allowed, max_answer_tokens)
        for row, (first, length) in enumerate(contexts):
            p_mask = (~allowed[row, :length]).astype(np.int64)[None]
            expected_start, expected_end, expected_score, _ = select_starts_ends(
                start_logits[row : row + 1, :length],
                end_logits[row : row + 1, :length],
                p_mask,
                np.ones((1, length), dtype=np.int64),
                max_answer_len=max_answer_tokens,
            )
            assert (starts[row], ends[row]) == (expected_start[0], expected_end[0])
            assert first <= starts[row] <= ends[row] < min(length - 1, starts[row] + max_answer_tokens)
            assert scores[row] == pytest.approx(float(expected_score[0]), rel=1e-5)
