"""Two-sample drift statistics on numpy arrays; every distribution and test comes from scipy.

What is written here is only glue: contingency tables, binning for PSI, the multiple-testing corrections'
bookkeeping and the vectorised permutations of the MMD test (all permutations in one matrix product).
"""

from __future__ import annotations

from typing import Any

import numpy as np

# scipy is imported inside each function: `scipy.stats` alone took 1.2 s of the 2.4 s a server process spent
# importing (python -X importtime), and every replica restart after a crash paid it before its model could
# load, though only a drift check ever calls these.

FloatArray = np.ndarray[Any, np.dtype[np.float64]]
_EPS = 1e-6


def ks_test(reference: np.ndarray[Any, Any], window: np.ndarray[Any, Any]) -> tuple[float, float]:
    """(KS statistic, p-value): two-sample Kolmogorov-Smirnov on a continuous feature."""
    from scipy import stats

    result = stats.ks_2samp(reference, window)
    return float(result.statistic), float(result.pvalue)


def category_counts(
    reference: np.ndarray[Any, Any], window: np.ndarray[Any, Any]
) -> tuple[list[Any], np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """(categories, reference counts, window counts) over the union of both samples' values."""
    categories, codes = np.unique(np.concatenate([reference, window]), return_inverse=True)
    codes = codes.reshape(-1)
    ref_counts = np.bincount(codes[: len(reference)], minlength=len(categories))
    win_counts = np.bincount(codes[len(reference) :], minlength=len(categories))
    return categories.tolist(), ref_counts, win_counts


def chi2_test(reference: np.ndarray[Any, Any], window: np.ndarray[Any, Any]) -> tuple[float, float]:
    """(chi-square statistic, p-value) of the 2 × categories contingency table; (0, 1) for one category."""
    _, ref_counts, win_counts = category_counts(reference, window)
    if len(ref_counts) < 2:
        return 0.0, 1.0
    from scipy import stats

    result = stats.chi2_contingency(np.stack([ref_counts, win_counts]))
    return float(result.statistic), float(result.pvalue)


def jensen_shannon(reference: np.ndarray[Any, Any], window: np.ndarray[Any, Any]) -> float:
    """Jensen-Shannon distance (base 2, 0 = same, 1 = disjoint) between two categorical samples."""
    _, ref_counts, win_counts = category_counts(reference, window)
    from scipy.spatial import distance

    return float(distance.jensenshannon(ref_counts, win_counts, base=2))


def wasserstein_normalised(reference: np.ndarray[Any, Any], window: np.ndarray[Any, Any]) -> float:
    """Earth mover's distance in units of the reference's standard deviation (scale-free)."""
    from scipy import stats

    spread = float(np.std(reference))
    return float(stats.wasserstein_distance(reference, window)) / (spread if spread > 0 else 1.0)


def quantile_edges(reference: np.ndarray[Any, Any], bins: int) -> FloatArray:
    """Bin edges at the reference's quantiles (duplicates merged), outermost edges open-ended for PSI."""
    edges = np.unique(np.quantile(reference.astype(np.float64), np.linspace(0, 1, bins + 1)))
    if len(edges) < 2:
        edges = np.array([edges[0] - 0.5, edges[0] + 0.5])
    return edges


def histogram(values: np.ndarray[Any, Any], edges: FloatArray) -> np.ndarray[Any, Any]:
    """Counts per bin; values outside the edges count in the outermost bins."""
    clipped = np.clip(values.astype(np.float64), edges[0], edges[-1])
    counts, _ = np.histogram(clipped, bins=edges)
    return counts


def psi_from_counts(ref_counts: np.ndarray[Any, Any], win_counts: np.ndarray[Any, Any]) -> float:
    """Population stability index Σ (w - r) ln(w / r) over bins (proportions floored at 1e-6)."""
    ref = np.maximum(ref_counts / max(ref_counts.sum(), 1), _EPS)
    win = np.maximum(win_counts / max(win_counts.sum(), 1), _EPS)
    return float(np.sum((win - ref) * np.log(win / ref)))


def psi(reference: np.ndarray[Any, Any], window: np.ndarray[Any, Any], bins: int) -> float:
    edges = quantile_edges(reference, bins)
    return psi_from_counts(histogram(reference, edges), histogram(window, edges))


def holm(p_values: list[float], alpha: float) -> list[bool]:
    """Holm's step-down: which hypotheses are rejected with the family-wise error rate at `alpha`."""
    order = np.argsort(p_values)
    rejected = [False] * len(p_values)
    for rank, index in enumerate(order):
        if p_values[index] > alpha / (len(p_values) - rank):
            break
        rejected[int(index)] = True
    return rejected


def benjamini_hochberg(p_values: list[float], alpha: float) -> list[bool]:
    """Which are rejected with the false discovery rate at `alpha` (scipy's adjusted p-values)."""
    if not p_values:
        return []
    from scipy import stats

    adjusted = stats.false_discovery_control(np.asarray(p_values), method="bh")
    return [bool(p <= alpha) for p in adjusted]


def mmd_permutation_test(
    reference: FloatArray, window: FloatArray, permutations: int, seed: int = 0
) -> tuple[float, float]:
    """(MMD², p-value): RBF kernel with the median-heuristic bandwidth, permutation p-value.

    The biased MMD² is wᵀKw with w = 1/m on the reference and -1/n on the window; B permutations are B
    weight vectors, so all of them cost one (B × N)·(N × N) product instead of B Python iterations.
    """
    pooled = np.concatenate([reference, window]).astype(np.float64)
    from scipy.spatial import distance

    squared = distance.squareform(distance.pdist(pooled, "sqeuclidean"))
    positive = squared[np.triu_indices_from(squared, k=1)]
    positive = positive[positive > 0]
    bandwidth_sq = float(np.median(positive)) if positive.size else 1.0
    kernel = np.exp(-squared / bandwidth_sq)  # exp(-d²/(2σ²)) with σ² = median(d²)/2
    m, n = len(reference), len(window)
    weights = np.concatenate([np.full(m, 1.0 / m), np.full(n, -1.0 / n)])
    observed = float(weights @ kernel @ weights)
    rng = np.random.default_rng(seed)
    shuffled = rng.permuted(np.tile(weights, (permutations, 1)), axis=1)
    null = np.einsum("bi,bi->b", shuffled @ kernel, shuffled)
    p_value = (1 + int(np.sum(null >= observed))) / (permutations + 1)
    return observed, p_value
