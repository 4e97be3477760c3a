"""Text pre-processing: batch tokenization and length grouping so padding stays small."""

from __future__ import annotations

import collections
import itertools
import os
import re
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

    Exact dynamic programming over the items sorted by length. A group ending at sorted position
    `end` and starting at `start` costs best[start] - start·x + end·x + overhead with x its longest
    length; that is a family of lines in x queried at non-decreasing x, so a monotone convex hull
    finds each minimum in amortised O(1): O(n log n) in all for the sort (the plain DP was O(n²):
    minutes for 100,000 items). Returns groups of original indices, each sorted by length.
    """
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    count = len(order)
    if count == 0:
        return []
    sorted_lengths = [lengths[i] for i in order]
    best = [0] * (count + 1)
    cut = [0] * (count + 1)
    hull: collections.deque[int] = collections.deque([0])  # group starts; line j: best[j] - j·x

    def value(start: int, x: int) -> int:
        return best[start] - start * x

    for end in range(1, count + 1):
        x = sorted_lengths[end - 1]  # sorted, so the last item of a group is its longest
        while len(hull) >= 2 and value(hull[1], x) <= value(hull[0], x):
            hull.popleft()
        start = hull[0]
        best[end] = value(start, x) + end * x + run_overhead_tokens
        cut[end] = start
        # Drop the last line while the new one and the one before it make it useless everywhere.
        while len(hull) >= 2:
            first, middle = hull[-2], hull[-1]
            if (best[end] - best[first]) * (middle - first) <= (best[middle] - best[first]) * (end - first):
                hull.pop()
            else:
                break
        hull.append(end)
    groups: list[list[int]] = []
    end = count
    while end > 0:
        start = cut[end]
        groups.append(order[start:end])
        end = start
    groups.reverse()
    return groups


# BERT's CJK ideograph blocks: its normalizer isolates each of these as a word of its own.
_CJK = (
    "\u4e00-\u9fff\u3400-\u4dbf\uf900-\ufaff\U00020000-\U0002a6df\U0002a700-\U0002b73f"
    "\U0002b740-\U0002b81f\U0002b820-\U0002ceaf\U0002f800-\U0002fa1f"
)
# A match starts a word that yields at least one token: a letter or digit at the start of the text or
# right after ASCII whitespace, an ASCII punctuation character or a CJK ideograph (BERT makes each of
# those a word of its own). Distinct matches lie in distinct words.
_WORD_START = re.compile(rf"(?:^|[ \t\n\r])[^\W_]|[!-/:-@\[-`{{-~]|[{_CJK}]")
# Characters per kept token the search allows: English averages 5-6 a word (254 words of prose took
# 1,319 characters), so 16 leaves room for long technical words. It is this bound that caps tokenizer
# time: the slowest text within it, words of max_input_chars_per_word letters, takes ~20 ms.
_CHARS_PER_TOKEN = 16


class TextCut:
    """Cuts a long text to a prefix that tokenizes to exactly the tokens the full text keeps.

    There is no character bound that is safe for every text: a word over `max_input_chars_per_word`
    (100) characters is one [UNK] token however long it is, whitespace runs and control characters
    make no token, and combining marks vanish in normalization (all tested). What is safe, for a BERT normalizer
    and pre-tokenizer with WordPiece: tokenization is word-local (whitespace and punctuation end a
    word; each CJK ideograph is a word), and a word holding a letter or digit yields at least one
    token. So a cut just before the (K+1)-th word start found by `_WORD_START`, K the tokens kept
    (max_length minus the special tokens), leaves K whole words, at least K tokens, that tokenize
    as in the full text: the same kept tokens, the same embedding.

    The search looks at the first `max_chars` = max_length × 16 characters only. (A bound from
    `max_input_chars_per_word`, max_length × 101 characters, would cut every text of ordinary
    words, but a batch of 128 texts of 100-letter words that long took 15 s to tokenize.) A text
    longer than that whose first `max_chars` characters hold fewer than K word starts cannot be cut
    exactly and is refused; any other text reaches the tokenizer with at most `max_chars`
    characters, so tokenizing costs at most that per text.
    """

    def __init__(self, kept_tokens: int, max_length_tokens: int) -> None:
        self.kept_tokens = kept_tokens
        self.max_length_tokens = max_length_tokens
        self.max_chars = max_length_tokens * _CHARS_PER_TOKEN
        # Shorter texts tokenize in well under a millisecond: not worth a search.
        self.min_chars = 4 * max_length_tokens

    def __call__(self, text: str, name: str, index: int) -> str:
        if len(text) <= self.min_chars:
            return text
        starts = _WORD_START.finditer(text, 0, self.max_chars + 1)
        beyond = next(itertools.islice(starts, self.kept_tokens, None), None)
        if beyond is not None:
            return text[: beyond.start()]
        if len(text) <= self.max_chars:
            return text
        raise InvalidInput(
            f"input '{name}' item {index}: a text over {self.max_chars} characters is cut to the "
            f"{self.max_length_tokens} tokens the model keeps (artifact preprocessing.max_length_tokens), "
            f"but its first {self.max_chars} characters hold fewer than {self.kept_tokens} words, so it "
            "cannot be cut without changing its embedding; send the part to embed"
        )


class TextEncoder:
    """Wraps a `tokenizers` tokenizer: strings in, padded id/mask arrays out, grouped by length."""

    def __init__(
        self,
        tokenizer_file: Path,
        max_length_tokens: int,
        graph_inputs: Sequence[str],
        stride_tokens: int = 0,
        length_grouping: bool = True,
    ) -> None:
        """`stride_tokens` > 0 makes a pair encoder: the second text is split into overlapping
        windows (each with the whole first text) instead of truncated, as question answering needs.
        `length_grouping` False pads a whole batch to its longest text, in one run (for accelerators
        whose run costs about the same at any length)."""
        self.length_grouping = length_grouping
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
        # A copy without truncation counts a first text's tokens (one instance per use: the
        # tokenizer's settings are shared state and predict runs in worker threads).
        self._counter = Tokenizer.from_str(self._tokenizer.to_str())
        self._counter.no_truncation()
        if stride_tokens > 0:
            self._tokenizer.enable_truncation(
                max_length=max_length_tokens, stride=stride_tokens, strategy="only_second"
            )
        else:
            self._tokenizer.enable_truncation(max_length=max_length_tokens)
        # With windows, each holds the whole first text, the special tokens and more than
        # `stride_tokens` of the second; tokenizers panics on a first text longer than that.
        self.max_first_tokens = (
            max_length_tokens - self._tokenizer.num_special_tokens_to_add(True) - stride_tokens - 1
        )
        self.graph_inputs = list(graph_inputs)
        unknown = set(self.graph_inputs) - {"input_ids", "attention_mask", "token_type_ids"}
        if unknown:
            raise IntegrityError(f"tokenizer cannot produce graph inputs {sorted(unknown)}")
        self.cut = _text_cut(self._tokenizer, max_length_tokens)

    def prepare(self, texts: np.ndarray[Any, Any], name: str, cut: bool = True) -> np.ndarray[Any, Any]:
        """One request's texts as str, each checked as UTF-8 and (`cut`) cut to what the tokenizer keeps.

        O(bytes): one decode per element (the format forces a loop over elements) and, for long
        texts, a regex search of at most `cut.max_chars` characters. A text split into windows
        (a question answering context) is not cut: all of it is searched for the answer.
        """
        cutter = self.cut if cut else None
        flat = texts.ravel()
        prepared = np.empty(len(flat), dtype=object)
        for index, item in enumerate(flat):
            if isinstance(item, bytes):
                try:
                    text = item.decode("utf-8")
                except UnicodeDecodeError:
                    raise InvalidInput(f"input '{name}' item {index} is not UTF-8 text") from None
            else:
                text = str(item)
            prepared[index] = cutter(text, name, index) if cutter is not None else text
        return prepared.reshape(texts.shape)

    def encode_groups(
        self, texts: np.ndarray[Any, Any]
    ) -> list[tuple[list[int], dict[str, np.ndarray[Any, Any]]]]:
        """Tokenize a batch of texts; return (indices, graph feed) per length group."""
        strings: list[str] = []
        for item in texts.ravel():
            if isinstance(item, str):  # prepared by `prepare`
                strings.append(item)
                continue
            try:
                strings.append(item.decode("utf-8") if isinstance(item, bytes) else str(item))
            except UnicodeDecodeError:
                raise InvalidInput("input 'text' must be UTF-8") from None
        encodings = self._tokenizer.encode_batch(strings, add_special_tokens=True)
        return self.group_feeds([encoding.ids for encoding in encodings])

    def first_text_tokens(self, texts: Sequence[str]) -> list[int]:
        """How many tokens each text has on its own (no special tokens, no truncation)."""
        return [len(e.ids) for e in self._counter.encode_batch(list(texts), add_special_tokens=False)]

    def encode_windows(self, firsts: Sequence[str], seconds: Sequence[str]) -> list[list[Any]]:
        """Each pair's `tokenizers.Encoding`s: the first window, then the overflowing ones in order.

        The caller keeps each first text within `max_first_tokens` (longer ones make tokenizers panic).
        """
        encodings = self._tokenizer.encode_batch(list(zip(firsts, seconds, strict=True)))
        return [[encoding, *encoding.overflowing] for encoding in encodings]

    def group_feeds(
        self, id_lists: Sequence[Sequence[int]], type_id_lists: Sequence[Sequence[int]] | None = None
    ) -> list[tuple[list[int], dict[str, np.ndarray[Any, Any]]]]:
        """Token id rows → (row indices, padded graph feed) per length group (`plan_length_groups`)."""
        feeds: list[tuple[list[int], dict[str, np.ndarray[Any, Any]]]] = []
        lengths = [len(ids) for ids in id_lists]
        groups = plan_length_groups(lengths) if self.length_grouping else [list(range(len(lengths)))]
        for indices in groups if lengths else []:
            width = max(len(id_lists[i]) for i in indices)
            input_ids = np.zeros((len(indices), width), dtype=np.int64)
            attention_mask = np.zeros((len(indices), width), dtype=np.int64)
            token_type_ids = np.zeros((len(indices), width), dtype=np.int64)
            for row, index in enumerate(indices):
                ids = id_lists[index]
                input_ids[row, : len(ids)] = ids
                attention_mask[row, : len(ids)] = 1
                if type_id_lists is not None:
                    token_type_ids[row, : len(ids)] = type_id_lists[index]
            available = {
                "input_ids": input_ids,
                "attention_mask": attention_mask,
                "token_type_ids": token_type_ids,
            }
            feeds.append((indices, {name: available[name] for name in self.graph_inputs}))
        return feeds

    def tokenize(self, texts: np.ndarray[Any, Any], pairs: np.ndarray[Any, Any] | None = None) -> list[Any]:
        """`tokenizers` Encodings (ids, type ids, character offsets, special-token mask) of texts
        prepared by `prepare`, or of (text, pair) pairs truncated longest-first as transformers does.

        `prepare`'s cut is exact for pairs too: it keeps max_length - 2 tokens of each side, more
        than the max_length - 3 a pair can keep in all, so truncation drops the same tokens.
        """
        strings = [str(item) for item in texts.ravel()]
        if pairs is None:
            return list(self._tokenizer.encode_batch(strings, add_special_tokens=True))
        seconds = [str(item) for item in pairs.ravel()]
        return list(
            self._tokenizer.encode_batch(list(zip(strings, seconds, strict=True)), add_special_tokens=True)
        )

    def group_encodings(
        self, encodings: Sequence[Any]
    ) -> list[tuple[list[int], dict[str, np.ndarray[Any, Any]]]]:
        """Encodings from `tokenize` as (indices, padded graph feed) per length group; token types
        come from the encodings (1 on a pair's second segment)."""
        return self.group_feeds([e.ids for e in encodings], [e.type_ids for e in encodings])

    def tokens_to_string(self, tokens: list[str]) -> str:
        """Tokens joined back to text by the tokenizer's decoder, as transformers' fast tokenizers'
        convert_tokens_to_string does (WordPiece: '##' pieces glued, spaces before punctuation cleaned)."""
        decoder = self._tokenizer.decoder
        return str(decoder.decode(tokens)) if decoder is not None else " ".join(tokens)

    @property
    def unk_id(self) -> int | None:
        """The id of the tokenizer's unknown token, if it has one."""
        unk = getattr(self._tokenizer.model, "unk_token", None)
        return None if unk is None else self._tokenizer.token_to_id(unk)


def _text_cut(tokenizer: Any, max_length_tokens: int) -> TextCut | None:
    """The exact cut for BERT-style tokenizers (what TextCut reasons about); None for any other kind."""
    normalizer = type(tokenizer.normalizer).__name__
    if (
        type(tokenizer.model).__name__ != "WordPiece"
        or type(tokenizer.pre_tokenizer).__name__ != "BertPreTokenizer"
        or normalizer not in ("BertNormalizer", "NoneType")
    ):
        return None
    kept = max_length_tokens - tokenizer.num_special_tokens_to_add(False)
    return TextCut(kept, max_length_tokens)
