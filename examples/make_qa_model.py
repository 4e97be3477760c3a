"""Write a tiny BertForQuestionAnswering folder and build it into demo-output/artifacts/qa.

RANDOM WEIGHTS, FOR LOAD TESTS ONLY: no question answering weights ship with modelfleet and none can
be downloaded here, so this model answers nonsense (deterministically: fixed seed). It has the shape
of the guidance's workload (question and context in, a span of the context out, long contexts split
into windows) for `examples/fleet-eks-guidance.yaml` and `benchmarks/serve_qa.py`. Bring your own
fine-tuned folder to serve real answers: `modelfleet build path/to/bert-qa -o artifacts/qa`.

    python examples/make_qa_model.py            # writes demo-output/sources/qa and demo-output/artifacts/qa
    python examples/make_qa_model.py --minilm   # the bundled MiniLM encoder (6 layers, hidden 384, real
                                                # weights) under a random QA head: a realistic serving cost
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from modelfleet.build import BuildOptions, build_artifact
from modelfleet.build.bundled import bundled_model_dir

TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json")


def write_qa_model(folder: Path, seed: int = 0, max_position_embeddings: int = 128) -> Path:
    """A random-initialised 2-layer BERT (hidden 32) QA head with the bundled MiniLM vocabulary."""
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
        # then decided by more than float rounding, in the artifact and in the reference alike.
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


def write_minilm_qa_model(folder: Path, seed: int = 0) -> Path:
    """The bundled MiniLM's encoder weights under a random-initialised (seeded) span head.

    The answers are still nonsense, but every window costs what a 6-layer, 384-wide BERT costs, with
    the pipeline's 384-token windows and stride 128: what a load test of QA serving should pay.
    """
    import torch
    import transformers
    from transformers import BertForQuestionAnswering

    transformers.logging.set_verbosity_error()  # "newly initialized: qa_outputs" is the point here
    transformers.logging.disable_progress_bar()
    torch.manual_seed(seed)
    source = bundled_model_dir()
    model = BertForQuestionAnswering.from_pretrained(str(source), local_files_only=True).eval()
    model.config.architectures = ["BertForQuestionAnswering"]
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    for name in TOKENIZER_FILES:
        shutil.copy(source / name, folder / name)
    return folder


def main(out: Path, minilm: bool = False) -> None:
    source = (write_minilm_qa_model if minilm else write_qa_model)(out / "sources" / "qa")
    manifest = build_artifact(source, out / "artifacts" / "qa", BuildOptions(name="qa", force=True))
    checks = ", ".join(f"{v.metric} {v.value:.3g}" for v in manifest.verification)
    print(f"built {out / 'artifacts' / 'qa'} (random weights, load tests only): {checks}")


if __name__ == "__main__":
    arguments = [a for a in sys.argv[1:] if a != "--minilm"]
    main(Path(arguments[0] if arguments else "demo-output").resolve(), minilm="--minilm" in sys.argv[1:])
