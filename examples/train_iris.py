"""Train a small scikit-learn classifier on the iris data set and save it with skops.

    python examples/train_iris.py -o iris.skops
    modelfleet build iris.skops -o artifacts/iris

The data set ships inside scikit-learn, so this runs offline. skops (not pickle) is the format
`modelfleet build` accepts without --trust-pickle: loading it cannot run code from the file.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def train_and_save(output: Path, seed: int = 0) -> float:
    """Fit a scaled logistic regression on iris, save it to `output`; returns held-out accuracy."""
    import skops.io
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    features, labels = load_iris(return_X_y=True)
    train_x, test_x, train_y, test_y = train_test_split(
        features, labels, test_size=0.25, random_state=seed, stratify=labels
    )
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000, random_state=seed))
    model.fit(train_x, train_y)
    output.parent.mkdir(parents=True, exist_ok=True)
    skops.io.dump(model, output)
    return float(model.score(test_x, test_y))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "-o", "--output", type=Path, default=Path("iris.skops"), help="where to write the .skops file"
    )
    parser.add_argument("--seed", type=int, default=0, help="train/test split and solver seed")
    args = parser.parse_args()
    accuracy = train_and_save(args.output, args.seed)
    print(f"saved {args.output} (held-out accuracy {accuracy:.3f})")


if __name__ == "__main__":
    main()
