"""Length grouping: every item in exactly one group, the grouping is optimal for its cost model, and the
embeddings come back in request order."""

from __future__ import annotations

import itertools
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modelfleet.build.bundled import bundled_model_dir
from modelfleet.errors import InvalidInput
from modelfleet.runtime.text import TextEncoder, plan_length_groups


def _cost(groups: list[list[int]], lengths: list[int], overhead: int) -> int:
    return sum(overhead + len(group) * max(lengths[i] for i in group) for group in groups)


@given(st.lists(st.integers(min_value=1, max_value=300), min_size=0, max_size=60))
def test_groups_cover_every_item_once(lengths: list[int]) -> None:
    groups = plan_length_groups(lengths)
    assert sorted(i for group in groups for i in group) == list(range(len(lengths)))


def test_similar_lengths_share_a_run_and_outliers_get_their_own() -> None:
    lengths = [12, 14, 13, 250, 11, 12]
    groups = plan_length_groups(lengths, run_overhead_tokens=32)
    assert len(groups) == 2
    assert [3] in groups


def test_uniform_lengths_make_one_group() -> None:
    assert plan_length_groups([16] * 40) == [list(range(40))]


@given(st.lists(st.integers(min_value=1, max_value=64), min_size=1, max_size=7))
def test_grouping_is_optimal_among_contiguous_partitions_of_sorted_items(lengths: list[int]) -> None:
    overhead = 16
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    best = None
    for cuts in itertools.product([False, True], repeat=len(order) - 1):
        groups, current = [], [order[0]]
        for cut, index in zip(cuts, order[1:], strict=True):
            if cut:
                groups.append(current)
                current = []
            current.append(index)
        groups.append(current)
        cost = _cost(groups, lengths, overhead)
        best = cost if best is None else min(best, cost)
    assert _cost(plan_length_groups(lengths, overhead), lengths, overhead) == best


def _quadratic_plan_cost(lengths: list[int], overhead: int) -> int:
    # The plain O(n²) dynamic programme the hull replaced: the reference for optimality at any n.
    ordered = sorted(lengths)
    best = [0] + [0] * len(ordered)
    for end in range(1, len(ordered) + 1):
        best[end] = min(best[s] + overhead + (end - s) * ordered[end - 1] for s in range(end))
    return best[-1]


@given(st.lists(st.integers(min_value=0, max_value=256), min_size=1, max_size=200), st.integers(0, 64))
def test_hull_grouping_matches_the_quadratic_programme(lengths: list[int], overhead: int) -> None:
    assert _cost(plan_length_groups(lengths, overhead), lengths, overhead) == _quadratic_plan_cost(
        lengths, overhead
    )


def test_a_large_batch_plans_in_near_linear_time() -> None:
    lengths = [(i * 7919) % 257 for i in range(100_000)]
    started = time.perf_counter()
    groups = plan_length_groups(lengths)
    # the O(n²) programme took minutes here; the hull takes well under a second
    assert time.perf_counter() - started < 5.0
    assert sorted(i for group in groups for i in group) == list(range(len(lengths)))


@pytest.fixture(scope="module")
def encoder() -> TextEncoder:
    return TextEncoder(bundled_model_dir() / "tokenizer.json", 256, ["input_ids", "attention_mask"])


@pytest.fixture(scope="module")
def small_encoder() -> TextEncoder:
    # 16 tokens kept: short texts exercise the cut, so hypothesis can try many
    return TextEncoder(bundled_model_dir() / "tokenizer.json", 16, ["input_ids", "attention_mask"])


def _ids(encoder: TextEncoder, text: str) -> list[int]:
    feeds = encoder.encode_groups(np.array([text], dtype=object))
    ((_, feed),) = feeds
    return [int(i) for i in feed["input_ids"][0]]


_PIECES = st.sampled_from(
    [
        "the",
        "Quick",
        "brown",
        "fox",
        "naïve",
        "café",
        "x" * 120,
        "日本語",
        "中",
        "Ελληνικά",
        "ΣΑΣ",
        "١٢٣",
        "e\u0301",
        "\u0301",
        "\x00",
        "\u200b",
        "\ufffd",
        "İstanbul",
        "한국어",
        "don't",
        "--",
        "...",
        "a.b,c",
        "😀",
        "_",
        "1,000",
    ]
)
_SEPARATORS = st.sampled_from([" ", "  ", "\t", "\n", "\r\n", "", "\u3000", "\xa0", " " * 40])


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(_PIECES, _SEPARATORS), min_size=1, max_size=120))
def test_a_cut_text_tokenizes_to_the_tokens_the_full_text_keeps(
    small_encoder: TextEncoder, parts: list[tuple[str, str]]
) -> None:
    text = "".join(piece + separator for piece, separator in parts)
    try:
        cut = small_encoder.prepare(np.array([text.encode()], dtype=object), "text")[0]
    except InvalidInput:
        assert small_encoder.cut is not None and len(text) > small_encoder.cut.max_chars
        return
    assert text.startswith(cut)
    assert _ids(small_encoder, cut) == _ids(small_encoder, text)


def test_a_long_document_is_cut_before_tokenizing_and_keeps_its_embedding_input(encoder: TextEncoder) -> None:
    text = " ".join(f"word{i % 97} and, more; text" for i in range(20_000))  # ~600 KB, far over 256 tokens
    assert encoder.cut is not None and len(text) > encoder.cut.max_chars
    cut = encoder.prepare(np.array([text.encode()], dtype=object), "text")[0]
    assert len(cut) < 2_000
    assert _ids(encoder, cut) == _ids(encoder, text)


def test_a_text_that_cannot_be_cut_exactly_is_refused_and_bad_utf8_is_named(encoder: TextEncoder) -> None:
    assert encoder.cut is not None
    whitespace = " " * (encoder.cut.max_chars + 1) + "word " * 300
    with pytest.raises(InvalidInput, match=r"item 1: a text over 4096 characters .*max_length_tokens"):
        encoder.prepare(np.array([b"fine", whitespace.encode()], dtype=object), "text")
    with pytest.raises(InvalidInput, match="input 'text' item 2 is not UTF-8"):
        encoder.prepare(np.array([b"a", b"b", b"\xff\xfe"], dtype=object), "text")
    # short or merely long texts pass untouched
    assert list(encoder.prepare(np.array([b"a", "é".encode() * 3000], dtype=object), "text")) == [
        "a",
        "é" * 3000,
    ]


def _pair_encoder(max_length_tokens: int = 32) -> TextEncoder:
    names = ["input_ids", "attention_mask", "token_type_ids"]
    return TextEncoder(bundled_model_dir() / "tokenizer.json", max_length_tokens, names)


def test_pairs_tokenize_as_two_segments_with_offsets_and_group_with_their_token_types() -> None:
    encoder = _pair_encoder()
    texts = np.array(["a cat", "a much longer first text here"], dtype=object)
    pairs = np.array(["sat down", "ok"], dtype=object)
    encodings = encoder.tokenize(texts, pairs)
    first = encodings[0]
    assert first.tokens == ["[CLS]", "a", "cat", "[SEP]", "sat", "down", "[SEP]"]
    assert first.type_ids == [0, 0, 0, 0, 1, 1, 1]
    assert first.special_tokens_mask == [1, 0, 0, 1, 0, 0, 1]
    assert first.offsets[2] == (2, 5)  # characters of "cat" in its own text
    feeds = encoder.group_encodings(encodings)
    assert sorted(i for indices, _ in feeds for i in indices) == [0, 1]
    for indices, feed in feeds:
        assert list(feed) == ["input_ids", "attention_mask", "token_type_ids"]
        for row, index in enumerate(indices):
            size = len(encodings[index].ids)
            assert feed["token_type_ids"][row, :size].tolist() == encodings[index].type_ids
            assert feed["attention_mask"][row].tolist() == [1] * size + [0] * (
                feed["input_ids"].shape[1] - size
            )


def test_the_exact_cut_keeps_a_pair_s_tokens_as_the_full_texts_give() -> None:
    encoder = _pair_encoder(max_length_tokens=16)
    words = " ".join(f"word{i}" for i in range(400))  # over min_chars (4 x 16): prepare cuts it
    for text, pair in ((words, "short pair"), ("short text", words), (words, words[::-1])):
        prepared = encoder.prepare(np.array([text.encode()], dtype=object), "text")
        prepared_pair = encoder.prepare(np.array([pair.encode()], dtype=object), "text_pair")
        assert len(prepared[0]) < len(text) or len(prepared_pair[0]) < len(pair)
        [cut] = encoder.tokenize(prepared, prepared_pair)
        [full] = encoder.tokenize(np.array([text], dtype=object), np.array([pair], dtype=object))
        assert cut.ids == full.ids and len(cut.ids) == 16


def test_without_length_grouping_a_batch_is_one_padded_run() -> None:
    tokenizer = bundled_model_dir() / "tokenizer.json"
    texts = np.array(["short"] * 6 + ["word " * 100], dtype=object)
    grouped = TextEncoder(tokenizer, 128, ["input_ids", "attention_mask"]).encode_groups(texts)
    whole = TextEncoder(tokenizer, 128, ["input_ids", "attention_mask"], length_grouping=False).encode_groups(
        texts
    )
    assert len(grouped) > 1
    assert len(whole) == 1 and sorted(whole[0][0]) == list(range(7))
    assert whole[0][1]["input_ids"].shape[1] == max(feed["input_ids"].shape[1] for _, feed in grouped)


def test_embeddings_come_back_in_request_order_from_one_run_or_from_length_groups(
    minilm_fp32_artifact: Path,
) -> None:
    from modelfleet.runtime import load_model

    model = load_model(minilm_fp32_artifact, intra_op_threads=1)

    def embed(texts: list[str]) -> np.ndarray[Any, Any]:
        batch = np.array([text.encode() for text in texts], dtype=object)
        return model.predict(model.validate_inputs({"text": batch}))["embedding"]

    mixed = ["tiny", "a much longer sentence about serving many models from one small node", "short one"]
    same_length = ["red apple", "blue apple", "green pear"]  # one token each word: one run, in order
    for texts in (mixed, same_length):
        singles = np.concatenate([embed([text]) for text in texts])
        np.testing.assert_allclose(embed(texts), singles, atol=1e-4)
    model.close()
