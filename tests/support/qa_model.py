"""A tiny random-initialised BertForQuestionAnswering folder with the bundled MiniLM vocabulary.

Random weights answer nonsense, but deterministically (fixed seed), which is all a comparison with
the transformers reference needs. 128 positions make the built-in long contexts split into windows.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from modelfleet.build.bundled import bundled_model_dir

TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json")


def write_qa_model(folder: Path, seed: int = 0, max_position_embeddings: int = 128) -> Path:
    """Save the model and the bundled tokenizer files into `folder`; returns it."""
    import torch
    from transformers import BertConfig, BertForQuestionAnswering

    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=30522,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=max_position_embeddings,
        # Wider than BERT's 0.02 so random logits differ clearly between tokens: the best span is
        # then decided by more than float rounding, on both sides of the comparison.
        initializer_range=0.2,
        architectures=["BertForQuestionAnswering"],
    )
    model = BertForQuestionAnswering(config).eval()
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    source = bundled_model_dir()
    for name in TOKENIZER_FILES:
        shutil.copy(source / name, folder / name)
    return folder
