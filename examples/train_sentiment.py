"""Fine-tune a sentiment head on the bundled MiniLM encoder and save it as a Hugging Face folder.

    python examples/train_sentiment.py -o sentiment-model
    modelfleet build sentiment-model -o artifacts/sentiment

The bundled all-MiniLM-L6-v2 is loaded as a BertForSequenceClassification (labels negative and
positive) and trained on the small labelled set below, so this runs offline in seconds. The folder it
writes (config.json with id2label, weights, tokenizer) is what `modelfleet build` detects as a text
classifier.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from modelfleet.build import bundled_model_dir

LABELS = {0: "negative", 1: "positive"}
POSITIVE = (
    "I loved this film, it was wonderful.",
    "An absolute delight from start to finish.",
    "The food was delicious and the staff were friendly.",
    "Great product, works perfectly and arrived early.",
    "What a fantastic performance by the whole cast.",
    "I am so happy with my purchase.",
    "This is the best book I have read all year.",
    "The hotel was clean, quiet and beautiful.",
    "Excellent service, I will definitely come back.",
    "A brilliant, heartwarming story.",
    "The concert was amazing and the crowd was joyful.",
    "Highly recommended, a real pleasure to use.",
    "Everything went smoothly and I feel great.",
    "Superb quality for a fair price.",
    "My kids adored it and so did I.",
    "A charming and uplifting experience.",
    "The new update is fast and lovely.",
    "Such a kind and helpful team.",
    "Beautiful scenery and a perfect day.",
    "I enjoyed every minute of it.",
)
NEGATIVE = (
    "I hated this film, it was awful.",
    "A complete waste of time and money.",
    "The food was cold and the staff were rude.",
    "Terrible product, it broke after one day.",
    "What a dreadful performance by the whole cast.",
    "I am very disappointed with my purchase.",
    "This is the worst book I have read all year.",
    "The hotel was dirty, noisy and ugly.",
    "Horrible service, I will never come back.",
    "A boring, depressing story.",
    "The concert was a mess and the sound was painful.",
    "Not recommended, a real pain to use.",
    "Everything went wrong and I feel miserable.",
    "Poor quality for an outrageous price.",
    "My kids hated it and so did I.",
    "A dull and frustrating experience.",
    "The new update is slow and annoying.",
    "Such an unhelpful and arrogant team.",
    "Grey skies and a ruined day.",
    "I regretted every minute of it.",
)
_EPOCHS = 12
_LEARNING_RATE = 1e-3


def train_and_save(output: Path, seed: int = 0) -> float:
    """Train the head (encoder frozen but for its pooler) and save the folder; returns seconds spent training."""
    import torch
    import transformers
    from transformers import AutoTokenizer, BertForSequenceClassification

    transformers.logging.set_verbosity_error()  # "some weights were newly initialised": expected here
    transformers.logging.disable_progress_bar()
    torch.manual_seed(seed)
    source = bundled_model_dir()
    tokenizer = AutoTokenizer.from_pretrained(str(source), local_files_only=True)
    model = BertForSequenceClassification.from_pretrained(
        str(source),
        local_files_only=True,
        num_labels=2,
        id2label=LABELS,
        label2id={v: k for k, v in LABELS.items()},
    )
    texts = [*POSITIVE, *NEGATIVE]
    labels = torch.tensor([1] * len(POSITIVE) + [0] * len(NEGATIVE))
    encoded = tokenizer(texts, padding=True, return_tensors="pt")
    started = time.perf_counter()
    # The encoder's last hidden state is computed once; only the pooler and the classifier learn,
    # which takes a few seconds on two cores.
    for parameter in model.bert.parameters():
        parameter.requires_grad = False
    with torch.no_grad():
        hidden = model.bert(**encoded).last_hidden_state
    trained = [*model.bert.pooler.parameters(), *model.classifier.parameters()]
    for parameter in trained:
        parameter.requires_grad = True
    optimizer = torch.optim.AdamW(trained, lr=_LEARNING_RATE)
    model.train()
    for _ in range(_EPOCHS):
        for batch in torch.randperm(len(texts)).split(8):
            logits = model.classifier(model.dropout(model.bert.pooler(hidden[batch])))
            loss = torch.nn.functional.cross_entropy(logits, labels[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    model.eval()
    elapsed_s = time.perf_counter() - started
    output.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(output))
    tokenizer.save_pretrained(str(output))
    return elapsed_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "-o", "--output", type=Path, default=Path("sentiment-model"), help="folder to write the model to"
    )
    parser.add_argument("--seed", type=int, default=0, help="torch seed (head initialisation, batch order)")
    args = parser.parse_args()
    elapsed_s = train_and_save(args.output, args.seed)
    print(f"saved {args.output} (trained in {elapsed_s:.1f} s)")


if __name__ == "__main__":
    main()
