"""Evaluation gates: the candidate version against the current one on the held-out recent items.

Both artifacts are loaded in this process through the runtime (modelfleet.runtime.load_model) and fed the
same items, so the comparison has no network or batching noise in it. By the artifact's task:

- classification / text-classification: with labels, accuracy (candidate − current ≥ min_accuracy_delta);
  without, agreement (share labelled alike ≥ min_agreement);
- regression: with labels, mean squared error (candidate ≤ current × max_error_ratio); without, no quality gate;
- text-embedding: mean cosine of the two versions' vectors ≥ min_cosine;
- every task: p99 latency of single-item runs, interleaved (candidate ≤ current × max_p99_latency_ratio +
  p99_slack_ms).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from modelfleet.config.retrain import RetrainGates
from modelfleet.drift.types import CapturedItem
from modelfleet.errors import InvalidInput
from modelfleet.manifest import read_manifest
from modelfleet.runtime.base import Model
from modelfleet.runtime.loader import load_model
from modelfleet.types import Arrays, Datatype

_BATCH_ITEMS = 256
_CLASSIFIERS = ("classification", "text-classification")


@dataclass(frozen=True)
class GateResult:
    name: str
    current: float | None
    candidate: float | None
    bound: float | None
    passed: bool
    detail: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def batch_inputs(model: Model, items: list[CapturedItem]) -> Arrays:
    """The items' inputs as one batch per the model's input specs (a missing or misshapen input: InvalidInput)."""
    arrays: Arrays = {}
    for spec in model.inputs:
        try:
            values = [item.inputs[spec.name] for item in items]
        except KeyError:
            raise InvalidInput(
                f"captured items lack input {spec.name!r} that model {model.name} needs; was the capture "
                "made from another model?"
            ) from None
        try:
            if spec.datatype is Datatype.BYTES:
                arrays[spec.name] = np.array(values, dtype=object)
            else:
                arrays[spec.name] = np.asarray(values, dtype=spec.datatype.numpy_dtype)
        except (ValueError, TypeError):
            raise InvalidInput(
                f"captured input {spec.name!r} does not fit {spec.datatype} {spec.shape} of model {model.name}"
            ) from None
    return model.validate_inputs(arrays)


def predict_all(model: Model, items: list[CapturedItem]) -> Arrays:
    """Every item's outputs, run in batches of at most 256 items, concatenated."""
    parts = [
        model.predict(batch_inputs(model, items[i : i + _BATCH_ITEMS]))
        for i in range(0, len(items), _BATCH_ITEMS)
    ]
    return {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}


def _label_output(outputs: Arrays) -> np.ndarray[Any, Any]:
    if "label" in outputs:
        return outputs["label"]
    first = next(iter(outputs.values()))
    return first if first.ndim == 1 else first.argmax(axis=1)


def _as_text(values: Any) -> list[str]:
    return [value.decode() if isinstance(value, bytes) else str(value) for value in values]


def quality_gates(
    task: str, current: Arrays, candidate: Arrays, labels: list[Any] | None, gates: RetrainGates
) -> list[GateResult]:
    """The quality gate(s) for ``task`` from both versions' outputs on the same items (pure)."""
    if task in _CLASSIFIERS:
        ours, theirs = _as_text(_label_output(current)), _as_text(_label_output(candidate))
        if labels is None:
            agreement = float(np.mean(np.array(ours) == np.array(theirs)))
            passed = agreement >= gates.min_agreement
            detail = f"agreement {agreement:.3f} {'≥' if passed else '<'} {gates.min_agreement:g} (gates.min_agreement)"
            return [GateResult("agreement", None, agreement, gates.min_agreement, passed, detail)]
        truth = np.array(_as_text(labels))
        acc_current = float(np.mean(np.array(ours) == truth))
        acc_candidate = float(np.mean(np.array(theirs) == truth))
        delta = acc_candidate - acc_current
        passed = delta >= gates.min_accuracy_delta
        detail = (
            f"accuracy {acc_candidate:.3f} vs current {acc_current:.3f}: delta {delta:+.3f} "
            f"{'≥' if passed else '<'} {gates.min_accuracy_delta:g} (gates.min_accuracy_delta)"
        )
        return [GateResult("accuracy", acc_current, acc_candidate, gates.min_accuracy_delta, passed, detail)]
    if task == "regression":
        if labels is None:
            return []
        truth = np.asarray(labels, dtype=np.float64).reshape(len(labels), -1)
        errors = []
        for outputs in (current, candidate):
            predicted = next(iter(outputs.values())).astype(np.float64).reshape(len(labels), -1)
            errors.append(float(np.mean((predicted - truth) ** 2)))
        bound = errors[0] * gates.max_error_ratio
        passed = errors[1] <= bound
        detail = (
            f"mse {errors[1]:.4g} vs current {errors[0]:.4g}: {'≤' if passed else '>'} {bound:.4g} "
            "(gates.max_error_ratio)"
        )
        return [GateResult("mse", errors[0], errors[1], bound, passed, detail)]
    if task == "text-embedding":
        a = next(iter(current.values())).astype(np.float64)
        b = next(iter(candidate.values())).astype(np.float64)
        a = a.reshape(len(a), -1)
        b = b.reshape(len(b), -1)
        if a.shape != b.shape:
            return [
                GateResult(
                    "cosine",
                    None,
                    None,
                    gates.min_cosine,
                    False,
                    f"vector shapes differ: {a.shape} vs {b.shape}",
                )
            ]
        norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
        cosine = float(np.mean(np.sum(a * b, axis=1) / np.maximum(norms, 1e-12)))
        passed = cosine >= gates.min_cosine
        detail = f"mean cosine {cosine:.4f} {'≥' if passed else '<'} {gates.min_cosine:g} (gates.min_cosine)"
        return [GateResult("cosine", None, cosine, gates.min_cosine, passed, detail)]
    return []


def latency_gate(p99_current_s: float, p99_candidate_s: float, gates: RetrainGates) -> GateResult:
    """Candidate p99 ≤ current p99 × max_p99_latency_ratio + p99_slack_ms (pure)."""
    bound_s = p99_current_s * gates.max_p99_latency_ratio + gates.p99_slack_ms / 1000
    passed = p99_candidate_s <= bound_s
    detail = (
        f"p99 {p99_candidate_s * 1000:.3f} ms vs current {p99_current_s * 1000:.3f} ms: "
        f"{'≤' if passed else '>'} {bound_s * 1000:.3f} ms (gates.max_p99_latency_ratio, gates.p99_slack_ms)"
    )
    return GateResult(
        "p99_latency_ms", p99_current_s * 1000, p99_candidate_s * 1000, bound_s * 1000, passed, detail
    )


def _p99_pair_s(
    current: Model, candidate: Model, items: list[CapturedItem], runs: int
) -> tuple[float, float]:
    """Single-item run times of both models, interleaved so machine noise hits both alike."""
    feeds = [batch_inputs(current, [items[i % len(items)]]) for i in range(min(runs, len(items)))]
    times: tuple[list[float], list[float]] = ([], [])
    for run in range(runs):
        feed = feeds[run % len(feeds)]
        for model, spent in ((current, times[0]), (candidate, times[1])):
            start = time.perf_counter()
            model.predict(feed)
            spent.append(time.perf_counter() - start)
    return float(np.percentile(times[0], 99)), float(np.percentile(times[1], 99))


def evaluate(
    current_dir: Path,
    candidate_dir: Path,
    items: list[CapturedItem],
    labels: list[Any] | None,
    gates: RetrainGates,
) -> list[GateResult]:
    """Load both artifacts in process, run the held-out items through each, and judge every gate."""
    current = load_model(current_dir, intra_op_threads=1)
    candidate = load_model(candidate_dir, intra_op_threads=1)
    try:
        task = read_manifest(candidate_dir).task
        results = quality_gates(
            task, predict_all(current, items), predict_all(candidate, items), labels, gates
        )
        results.append(latency_gate(*_p99_pair_s(current, candidate, items, gates.latency_runs), gates))
        return results
    finally:
        current.close()
        candidate.close()
