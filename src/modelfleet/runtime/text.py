"""Text pre-processing: batch tokenization and length grouping so padding stays small."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from modelfleet.errors import IntegrityError, InvalidInput

# A model run has a fixed cost on top of its per-token cost; this expresses it in tokens so the
# grouping below can trade "one more run" against "more padding". Measured on MiniLM/ORT CPU, a run's
# fixed overhead is roughly the cost of 16-64 tokens; 32 keeps groups few and padding low.
RUN_OVERHEAD_TOKENS = 32


def plan_length_groups(
    lengths: Sequence[int], run_overhead_tokens: int = RUN_OVERHEAD_TOKENS
) -> list[list[int]]:
    """Split item indices into groups of similar length, minimising Σ(overhead + n_group × max_len_group).

    Exact dynamic programming over the items sorted by length: O(n²), n is a batch (≤ a few hundred).
    Returns groups of original indices, each sorted by length.
    """
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    count = len(order)
    if count == 0:
        return []
    sorted_lengths = [lengths[i] for i in order]
    best_cost = [0.0] * (count + 1)
    cut = [0] * (count + 1)
    for end in range(1, count + 1):
        longest = sorted_lengths[end - 1]  # sorted, so the last item of a group is its longest
        best, best_start = float("inf"), 0
        for start in range(end):
            cost = best_cost[start] + run_overhead_tokens + (end - start) * longest
            if cost < best:
                best, best_start = cost, start
        best_cost[end], cut[end] = best, best_start
    groups: list[list[int]] = []
    end = count
    while end > 0:
        start = cut[end]
        groups.append(order[start:end])
        end = start
    groups.reverse()
    return groups


class TextEncoder:
    """Wraps a `tokenizers` tokenizer: strings in, padded id/mask arrays out, grouped by length."""

    def __init__(self, tokenizer_file: Path, max_length_tokens: int, graph_inputs: Sequence[str]) -> None:
        # tokenizers' Rayon pool spin-waits after each batch and steals the cores ONNX Runtime needs;
        # on server-sized batches (tens of short texts) serial tokenization is faster (measured 78 vs
        # 93 ms per batch of 32 on 2 cores). Must be set before the tokenizer's first parallel call.
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        from tokenizers import Tokenizer  # imported here: only text models need it

        try:
            self._tokenizer = Tokenizer.from_file(str(tokenizer_file))
        except Exception as exc:
            raise IntegrityError(f"cannot read tokenizer {tokenizer_file.name}: {exc}") from None
        self._tokenizer.no_padding()
        self._tokenizer.enable_truncation(max_length=max_length_tokens)
        self.graph_inputs = list(graph_inputs)
        unknown = set(self.graph_inputs) - {"input_ids", "attention_mask", "token_type_ids"}
        if unknown:
            raise IntegrityError(f"tokenizer cannot produce graph inputs {sorted(unknown)}")

    def encode_groups(
        self, texts: np.ndarray[Any, Any]
    ) -> list[tuple[list[int], dict[str, np.ndarray[Any, Any]]]]:
        """Tokenize a batch of texts; return (indices, graph feed) per length group."""
        strings: list[str] = []
        for item in texts.ravel():
            try:
                strings.append(item.decode("utf-8") if isinstance(item, bytes) else str(item))
            except UnicodeDecodeError:
                raise InvalidInput("input 'text' must be UTF-8") from None
        encodings = self._tokenizer.encode_batch(strings, add_special_tokens=True)
        id_lists = [encoding.ids for encoding in encodings]
        groups = plan_length_groups([len(ids) for ids in id_lists])
        feeds: list[tuple[list[int], dict[str, np.ndarray[Any, Any]]]] = []
        for indices in groups:
            width = max(len(id_lists[i]) for i in indices)
            input_ids = np.zeros((len(indices), width), dtype=np.int64)
            attention_mask = np.zeros((len(indices), width), dtype=np.int64)
            for row, index in enumerate(indices):
                ids = id_lists[index]
                input_ids[row, : len(ids)] = ids
                attention_mask[row, : len(ids)] = 1
            available = {
                "input_ids": input_ids,
                "attention_mask": attention_mask,
                "token_type_ids": np.zeros_like(input_ids),
            }
            feeds.append((indices, {name: available[name] for name in self.graph_inputs}))
        return feeds
