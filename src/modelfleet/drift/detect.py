"""Judge a window of served items against a reference: which test for which feature, the correction, the verdict.

Each tensor becomes features: a number per item is one feature, up to `max_tabular_features` values per
item are one feature each (`input:x[2]`), more (an embedding, an image) are one vector tested with MMD.
A probability output (rows in [0, 1] summing to 1) is judged by its arg-max class, a text input only when
it has few distinct values (a text's drift shows in its embedding output). Categorical features get
chi-square (Jensen-Shannon from `large_reference_items` on), continuous ones KS (Wasserstein then).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from modelfleet.config.drift import DriftConfig
from modelfleet.drift import stats
from modelfleet.drift.sampling import Window
from modelfleet.drift.types import DriftAssessment, DriftFinding, DriftTest

FeatureKind = Literal["continuous", "categorical", "vector"]
_MAX_HISTOGRAM_CATEGORIES = 50


@dataclass(frozen=True, slots=True)
class Feature:
    name: str
    kind: FeatureKind
    reference: np.ndarray[Any, Any]
    window: np.ndarray[Any, Any]


def features(reference: Window, window: Window, config: DriftConfig) -> list[Feature]:
    """The features both sides have, in a fixed order (inputs, then outputs, by name)."""
    found: list[Feature] = []
    for side, ref_tensors, win_tensors in (
        ("input", reference.inputs, window.inputs),
        ("output", reference.outputs, window.outputs),
    ):
        for name in sorted(set(ref_tensors) & set(win_tensors)):
            found.extend(_tensor_features(f"{side}:{name}", ref_tensors[name], win_tensors[name], config))
    return found


def _tensor_features(
    name: str, ref: np.ndarray[Any, Any], win: np.ndarray[Any, Any], config: DriftConfig
) -> list[Feature]:
    if ref.shape[1:] != win.shape[1:] or len(ref) == 0 or len(win) == 0:
        return []  # variable-length tensors of different lengths: nothing comparable feature by feature
    if ref.dtype == object or win.dtype == object:
        ref_text, win_text = (
            ref.reshape(len(ref), -1)[:, 0].astype(str),
            win.reshape(len(win), -1)[:, 0].astype(str),
        )
        if len(np.unique(ref_text)) <= config.categorical_max_values:
            return [Feature(name, "categorical", ref_text, win_text)]
        return []
    width = math.prod(ref.shape[1:])
    ref_flat, win_flat = ref.reshape(len(ref), width), win.reshape(len(win), width)
    if width > config.max_tabular_features:
        return [Feature(name, "vector", ref_flat.astype(np.float64), win_flat.astype(np.float64))]
    if width > 1 and _probabilities(ref_flat) and _probabilities(win_flat):
        return [Feature(f"{name}:argmax", "categorical", ref_flat.argmax(axis=1), win_flat.argmax(axis=1))]
    integer = ref.dtype.kind in "iub"
    found = []
    for column in range(width):
        label = name if width == 1 else f"{name}[{column}]"
        ref_col, win_col = ref_flat[:, column], win_flat[:, column]
        categorical = integer or len(np.unique(ref_col)) <= config.categorical_max_values
        found.append(Feature(label, "categorical" if categorical else "continuous", ref_col, win_col))
    return found


def _probabilities(rows: np.ndarray[Any, Any]) -> bool:
    if rows.dtype.kind != "f" or rows.size == 0:
        return False
    return bool(
        np.all((rows >= -1e-6) & (rows <= 1 + 1e-6)) and np.allclose(rows.sum(axis=1), 1.0, atol=1e-3)
    )


def assess(
    model: str,
    version: int | None,
    reference: Window,
    window: Window,
    config: DriftConfig,
    now: float | None = None,
) -> DriftAssessment:
    """The window judged against the reference, or `judged=False` with why when either is too small."""
    at = time.time() if now is None else now
    base = {
        "model": model,
        "version": version,
        "window_items": len(window),
        "reference_items": len(reference),
        "at": at,
    }
    if len(reference) < config.min_reference_items:
        reason = (
            f"reference of {len(reference)} items is below min_reference_items {config.min_reference_items}"
        )
        return DriftAssessment(**base, judged=False, drifted=False, reason=reason)  # type: ignore[arg-type]
    if len(window) < config.min_window_items:
        reason = f"window of {len(window)} items is below min_window_items {config.min_window_items}"
        return DriftAssessment(**base, judged=False, drifted=False, reason=reason)  # type: ignore[arg-type]
    found = features(reference, window, config)
    if not found:
        reason = "no feature to compare: the reference and the window share no testable tensor"
        return DriftAssessment(**base, judged=False, drifted=False, reason=reason)  # type: ignore[arg-type]
    large = len(reference) >= config.large_reference_items
    raw = [_test(feature, large, config) for feature in found]
    findings = _decide(raw, config)
    drifted = [f for f in findings if f.drifted]
    details = {"features": {f.name: _summary(f, config) for f in found}}
    if drifted:
        reason = (
            "drift in "
            + ", ".join(_describe(f) for f in drifted[:5])
            + (f" and {len(drifted) - 5} more" if len(drifted) > 5 else "")
        )
    else:
        reason = f"no drift in {len(findings)} test(s)"
    return DriftAssessment(
        **base,  # type: ignore[arg-type]
        judged=True,
        drifted=bool(drifted),
        reason=reason,
        findings=tuple(findings),
        details=details,
    )


def _test(feature: Feature, large: bool, config: DriftConfig) -> tuple[str, DriftTest, float, float | None]:
    """(name, test, statistic, p-value or None for a distance)."""
    if feature.kind == "vector":
        ref = (
            feature.reference[: config.mmd_max_items]
            if len(feature.reference) <= config.mmd_max_items
            else (
                feature.reference[
                    np.random.default_rng(1).choice(
                        len(feature.reference), config.mmd_max_items, replace=False
                    )
                ]
            )
        )
        win = (
            feature.window[: config.mmd_max_items]
            if len(feature.window) <= config.mmd_max_items
            else (
                feature.window[
                    np.random.default_rng(2).choice(len(feature.window), config.mmd_max_items, replace=False)
                ]
            )
        )
        statistic, p_value = stats.mmd_permutation_test(ref, win, config.mmd_permutations)
        return feature.name, "mmd", statistic, p_value
    if feature.kind == "categorical":
        if large:
            return (
                feature.name,
                "jensen_shannon",
                stats.jensen_shannon(feature.reference, feature.window),
                None,
            )
        statistic, p_value = stats.chi2_test(feature.reference, feature.window)
        return feature.name, "chi2", statistic, p_value
    if large:
        return (
            feature.name,
            "wasserstein",
            stats.wasserstein_normalised(feature.reference, feature.window),
            None,
        )
    statistic, p_value = stats.ks_test(feature.reference, feature.window)
    return feature.name, "ks", statistic, p_value


def _decide(raw: list[tuple[str, DriftTest, float, float | None]], config: DriftConfig) -> list[DriftFinding]:
    tested = [i for i, (_, _, _, p) in enumerate(raw) if p is not None]
    p_values = [float(raw[i][3] or 0.0) for i in tested]
    rejected = (
        stats.holm(p_values, config.alpha)
        if config.correction == "holm"
        else stats.benjamini_hochberg(p_values, config.alpha)
    )
    # The corrected level each p-value faced, by its rank (Holm: α/(k-rank); BH: α(rank+1)/k).
    order = np.argsort(p_values) if p_values else np.array([], dtype=int)
    levels: dict[int, float] = {}
    for rank, position in enumerate(order):
        k = len(p_values)
        levels[tested[int(position)]] = (
            config.alpha / (k - rank) if config.correction == "holm" else config.alpha * (rank + 1) / k
        )
    verdict = {tested[i]: rejected[i] for i in range(len(tested))}
    findings = []
    for index, (name, test, statistic, p_value) in enumerate(raw):
        if p_value is not None:
            findings.append(DriftFinding(name, test, statistic, p_value, levels[index], verdict[index]))
        else:
            threshold = (
                config.jensen_shannon_threshold if test == "jensen_shannon" else config.wasserstein_threshold
            )
            findings.append(DriftFinding(name, test, statistic, None, threshold, statistic > threshold))
    return findings


def _summary(feature: Feature, config: DriftConfig) -> dict[str, Any]:
    """What the report draws: both histograms on shared bins, and the PSI over them."""
    if feature.kind == "vector":
        return {"kind": "vector", "dimensions": int(feature.reference.shape[1])}
    if feature.kind == "categorical":
        categories, ref_counts, win_counts = stats.category_counts(feature.reference, feature.window)
        top = np.argsort(-(ref_counts + win_counts))[:_MAX_HISTOGRAM_CATEGORIES]
        return {
            "kind": "categorical",
            "categories": [str(categories[i]) for i in top],
            "reference": ref_counts[top].tolist(),
            "window": win_counts[top].tolist(),
            "psi": round(stats.psi_from_counts(ref_counts, win_counts), 6),
        }
    edges = stats.quantile_edges(feature.reference, config.psi_bins)
    ref_counts, win_counts = stats.histogram(feature.reference, edges), stats.histogram(feature.window, edges)
    return {
        "kind": "continuous",
        "edges": [float(edge) for edge in edges],
        "reference": ref_counts.tolist(),
        "window": win_counts.tolist(),
        "psi": round(stats.psi_from_counts(ref_counts, win_counts), 6),
    }


def _describe(finding: DriftFinding) -> str:
    if finding.p_value is not None:
        return f"{finding.name} ({finding.test} p={finding.p_value:.3g} <= {finding.threshold:.3g})"
    return f"{finding.name} ({finding.test} {finding.statistic:.3g} > {finding.threshold:.3g})"


def assessment_json(assessment: DriftAssessment) -> dict[str, Any]:
    """An assessment as one JSON document (the drift history line, the endpoint's answer)."""
    return {
        "model": assessment.model,
        "version": assessment.version,
        "at": assessment.at,
        "judged": assessment.judged,
        "drifted": assessment.drifted,
        "reason": assessment.reason,
        "window_items": assessment.window_items,
        "reference_items": assessment.reference_items,
        "findings": [
            {
                "name": f.name,
                "test": f.test,
                "statistic": f.statistic,
                "p_value": f.p_value,
                "threshold": f.threshold,
                "drifted": f.drifted,
            }
            for f in assessment.findings
        ],
        "details": assessment.details,
    }


def assessment_from_json(document: dict[str, Any]) -> DriftAssessment:
    return DriftAssessment(
        model=str(document["model"]),
        version=document.get("version"),
        window_items=int(document["window_items"]),
        reference_items=int(document["reference_items"]),
        judged=bool(document["judged"]),
        drifted=bool(document["drifted"]),
        reason=str(document["reason"]),
        findings=tuple(
            DriftFinding(
                name=f["name"],
                test=f["test"],
                statistic=float(f["statistic"]),
                p_value=None if f.get("p_value") is None else float(f["p_value"]),
                threshold=float(f["threshold"]),
                drifted=bool(f["drifted"]),
            )
            for f in document.get("findings", [])
        ),
        at=float(document.get("at", 0.0)),
        details=dict(document.get("details", {})),
    )
