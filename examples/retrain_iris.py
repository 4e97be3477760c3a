"""A retraining hook for the iris example: fit a scaled logistic regression on the captured window and its labels.

The fleet spec names it as a model's hook (docs/drift.md)::

    retrain:
      command: [python, examples/retrain_iris.py]
      labels: iris-labels.jsonl

It follows the hook contract: it reads MODELFLEET_WINDOW_FILE (one captured item a JSON line, the features
under `inputs.input`) and MODELFLEET_LABELS_FILE (one `{"label": ...}` line per window line), and writes
`model.skops` into MODELFLEET_OUTPUT_DIR, which `modelfleet build` accepts without --trust-pickle.

`--worse` (or RETRAIN_IRIS_WORSE=1) deliberately trains on wrong labels (each class shifted by one), to
show a gate rejecting a bad model.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path


def read_window(window_file: Path, labels_file: Path) -> tuple[list[list[float]], list[int]]:
    """The window's feature rows and their labels, line by line."""
    with window_file.open(encoding="utf-8") as handle:
        features = [json.loads(line)["inputs"]["input"] for line in handle if line.strip()]
    with labels_file.open(encoding="utf-8") as handle:
        labels = [int(json.loads(line)["label"]) for line in handle if line.strip()]
    if len(features) != len(labels):
        raise SystemExit(f"window has {len(features)} items but labels {len(labels)} lines")
    return features, labels


def train(features: list[list[float]], labels: list[int], output: Path, worse: bool) -> None:
    import numpy as np
    import skops.io
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    targets = np.asarray(labels)
    if worse:
        targets = (targets + 1) % 3
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000, random_state=0))
    model.fit(np.asarray(features, dtype=np.float32), targets)
    skops.io.dump(model, output)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--worse", action="store_true", help="train on shifted labels (a deliberately bad model)"
    )
    args = parser.parse_args()
    labels_file = os.environ.get("MODELFLEET_LABELS_FILE", "")
    if not labels_file:
        sys.exit("retrain_iris.py needs labels: set retrain.labels in the fleet spec or pass --labels")
    features, labels = read_window(Path(os.environ["MODELFLEET_WINDOW_FILE"]), Path(labels_file))
    output = Path(os.environ["MODELFLEET_OUTPUT_DIR"]) / "model.skops"
    worse = args.worse or os.environ.get("RETRAIN_IRIS_WORSE") == "1"
    train(features, labels, output, worse)
    print(f"trained on {len(features)} items{' (deliberately worse)' if worse else ''}, wrote {output}")


if __name__ == "__main__":
    main()
