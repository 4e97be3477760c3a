"""Token labels → entity groups, as transformers' aggregation_strategy="simple" groups them."""

from __future__ import annotations

import numpy as np
import pytest

from modelfleet.build import bundled_model_dir
from modelfleet.runtime.text import TextEncoder
from modelfleet.runtime.token_classification import TokenClassification

LABELS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
OUT, B_PER, I_PER, B_LOC, I_LOC = range(5)


@pytest.fixture(scope="module")
def encoder() -> TextEncoder:
    return TextEncoder(bundled_model_dir() / "tokenizer.json", 128, ["input_ids", "attention_mask"])


@pytest.fixture(scope="module")
def tagger(encoder: TextEncoder) -> TokenClassification:
    return TokenClassification(encoder, LABELS, ["O"])


def _groups(
    encoder: TextEncoder, tagger: TokenClassification, text: str, labels: list[int]
) -> list[tuple[str, str, int, int, float]]:
    [encoding] = encoder.tokenize(np.array([text], dtype=object))
    assert len(encoding.ids) == len(labels) + 2, encoding.tokens  # labels given for the real tokens
    best = np.array([OUT, *labels, OUT])
    scores = np.linspace(0.5, 0.9, len(best)).astype(np.float32)
    return [
        (g["entity_group"], g["word"], g["start"], g["end"], round(g["score"], 4))
        for g in tagger.entities(text, encoding, best, scores)
    ]


def test_b_starts_a_group_i_continues_it_and_o_is_left_out(
    encoder: TextEncoder, tagger: TokenClassification
) -> None:
    text = "John Smithson lives in Paris."
    # tokens: john smith ##son lives in paris .
    groups = _groups(encoder, tagger, text, [B_PER, I_PER, I_PER, OUT, OUT, B_LOC, B_LOC])
    assert [g[:4] for g in groups] == [
        ("PER", "john smithson", 0, 13),
        ("LOC", "paris", 23, 28),
        ("LOC", ".", 28, 29),  # a second B- starts a group of its own
    ]
    step = 0.4 / 8
    assert groups[0][4] == pytest.approx(0.5 + 2 * step, abs=1e-4)  # mean of the three tokens' scores


def test_a_change_of_type_starts_a_group_even_on_i(encoder: TextEncoder, tagger: TokenClassification) -> None:
    groups = _groups(encoder, tagger, "Anna Berlin", [B_PER, I_LOC])
    assert [g[:4] for g in groups] == [("PER", "anna", 0, 4), ("LOC", "berlin", 5, 11)]


def test_unknown_tokens_are_named_by_the_text_they_cover(
    encoder: TextEncoder, tagger: TokenClassification
) -> None:
    groups = _groups(encoder, tagger, "snow ☃ man", [OUT, B_LOC, I_LOC])
    assert [g[:4] for g in groups] == [("LOC", "☃ man", 5, 10)]
