"""Hugging Face `*ForTokenClassification` folder → logits graph served as entities (NER).

The graph takes `input_ids` and `attention_mask` and returns `logits` [batch, sequence, n_labels];
the server groups the tokens into entities as `pipeline("token-classification",
aggregation_strategy="simple")` does (`runtime/token_classification.py`).

Verification runs that very pipeline on the built-in sentences and the served path (the artifact's
tokenizer, its graph, the server's grouping) on the same sentences: every sentence must give the same
groups (entity type, word, start, end) and no group's score may differ by more than 1e-4.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from modelfleet.build.exported import Array, ExportedModel
from modelfleet.build.hf_classification import export_head
from modelfleet.build.hf_detect import HfDetection
from modelfleet.build.huggingface import (
    TOKENIZER_FILE,
    load_sentences,
)
from modelfleet.build.options import MAX_PROBABILITY_DIFF, BuildOptions
from modelfleet.build.samples import VERIFICATION_SENTENCES
from modelfleet.build.verify import run_session
from modelfleet.manifest import Postprocessing, TensorField, Verification
from modelfleet.runtime.text import TextEncoder
from modelfleet.runtime.token_classification import TokenClassification
from modelfleet.types import Datatype, Progress

IGNORED_LABELS = ["O"]  # the pipeline's default ignore_labels


def export_token_classification(
    folder: Path, work_dir: Path, options: BuildOptions, report: Progress, detection: HfDetection
) -> ExportedModel:
    """Export the folder's token classification head; see the module docstring."""
    head = export_head(folder, work_dir, options, report, detection, pairs=False)
    model, labels = head.model, head.labels
    sentences = load_sentences(options.samples) if options.samples else list(VERIFICATION_SENTENCES)

    def verify(session: Any, artifact_dir: Path) -> list[Verification]:
        expected = _pipeline_entities(model, folder, sentences, labels.names)
        served = TokenClassification(
            TextEncoder(artifact_dir / TOKENIZER_FILE, head.max_length, head.names),
            labels.names,
            IGNORED_LABELS,
        )

        def run(feed: dict[str, Array]) -> dict[str, Array]:
            return run_session(session, feed)

        outputs = served.predict(run, {"text": np.array(sentences, dtype=object)})
        got = [json.loads(item) for item in outputs["entities"]]
        return _compare(expected, got)

    return head.exported(
        inputs=[TensorField(name="text", datatype=Datatype.BYTES, shape=[-1])],
        outputs=[TensorField(name="entities", datatype=Datatype.BYTES, shape=[-1])],
        verify=verify,
        text_inputs=["text"],
        postprocessing=Postprocessing(
            labels=labels.names, score_function="softmax", aggregation="simple", ignored_labels=IGNORED_LABELS
        ),
        reference='transformers pipeline("token-classification", aggregation_strategy="simple")',
    )


def _pipeline_entities(
    model: Any, folder: Path, sentences: list[str], labels: list[str]
) -> list[list[dict[str, Any]]]:
    """What transformers' pipeline gives, the model's labels replaced by the served ones."""
    from transformers import AutoTokenizer, pipeline

    original = dict(model.config.id2label)
    model.config.id2label = dict(enumerate(labels))  # numeric labels when config.json names none
    try:
        tagger = pipeline(
            "token-classification",
            model=model,
            tokenizer=AutoTokenizer.from_pretrained(str(folder), local_files_only=True),
            aggregation_strategy="simple",
            device="cpu",
        )
        return [list(tagger(sentence)) for sentence in sentences]
    finally:
        model.config.id2label = original


def _compare(expected: list[list[dict[str, Any]]], got: list[list[dict[str, Any]]]) -> list[Verification]:
    """Sentences whose groups agree exactly, and the largest score difference over agreeing groups."""

    def spans(groups: list[dict[str, Any]]) -> list[tuple[str, str, int, int]]:
        return [(str(g["entity_group"]), str(g["word"]), int(g["start"]), int(g["end"])) for g in groups]

    agreeing = [spans(want) == spans(have) for want, have in zip(expected, got, strict=True)]
    differences = [
        abs(float(w["score"]) - float(h["score"]))
        for want, have, same in zip(expected, got, agreeing, strict=True)
        if same
        for w, h in zip(want, have, strict=True)
    ]
    agreement = float(np.mean(agreeing)) if agreeing else 1.0
    worst = max(differences, default=0.0)
    groups = float(sum(len(want) for want in expected))
    return [
        Verification(
            samples=len(agreeing),
            metric="entity_agreement",
            value=agreement,
            threshold=1.0,
            passed=all(agreeing),
            details={"mismatched_sentences": float(len(agreeing) - sum(agreeing)), "entity_groups": groups},
        ),
        Verification(
            samples=len(differences),
            metric="max_abs_score_diff",
            value=worst,
            threshold=MAX_PROBABILITY_DIFF,
            passed=worst <= MAX_PROBABILITY_DIFF,
        ),
    ]
