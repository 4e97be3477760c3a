"""Tiny random-initialised Hugging Face classification heads on the bundled MiniLM vocabulary.

2 layers, hidden size 32, a fixed torch seed: a folder saves in well under a second and builds in a
few. Nothing is downloaded: the tokenizer files are the bundled model's.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from modelfleet.build import bundled_model_dir

SENTIMENT_LABELS = {0: "negative", 1: "positive"}
NER_LABELS = {0: "O", 1: "B-PER", 2: "I-PER", 3: "B-LOC", 4: "I-LOC"}
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json")


def tiny_head_folder(
    destination: Path,
    architecture: str,
    id2label: dict[int, str] | None,
    num_labels: int = 2,
    seed: int = 0,
    problem_type: str | None = None,
) -> Path:
    """Save a random BertFor{Sequence,Token}Classification (architecture) with the bundled tokenizer."""
    import torch
    import transformers

    settings: dict[str, object] = {
        "vocab_size": 30522,
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "intermediate_size": 64,
        "max_position_embeddings": 512,
        # Wide initial weights spread the logits, so no sample sits on a near-tie between labels.
        "initializer_range": 0.2,
    }
    if id2label is not None:
        settings["id2label"] = id2label
        settings["label2id"] = {label: index for index, label in id2label.items()}
    else:
        settings["num_labels"] = num_labels
    if problem_type is not None:
        settings["problem_type"] = problem_type
    transformers.logging.disable_progress_bar()
    torch.manual_seed(seed)
    model = getattr(transformers, architecture)(transformers.BertConfig(**settings))
    if architecture == "BertForTokenClassification":
        with torch.no_grad():  # random heads tag nearly everything O: make entities (and groups) common
            model.classifier.bias[0] = -1.0
    model.save_pretrained(str(destination))
    for name in _TOKENIZER_FILES:
        shutil.copy(bundled_model_dir() / name, destination / name)
    return destination
