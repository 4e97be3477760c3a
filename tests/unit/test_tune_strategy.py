"""Search strategies over a synthetic cost surface: exhaustive, seeded Optuna with early stopping, resume."""

from __future__ import annotations

import math
from pathlib import Path

from modelfleet.config.tune import TuneSpec
from modelfleet.tune.space import Candidate, Settings, Variant, all_candidates
from modelfleet.tune.strategy import Exhaustive, OptunaSearch, choose

VARIANT = Variant(Path("/a"), "m", "fp32", "c" * 64)


def _candidates() -> list[Candidate]:
    spec = TuneSpec(
        artifacts=[Path("/a")],
        target_rate_per_s=100,
        space={"max_batch_size": [1, 2, 4, 8, 16, 32], "workers": [1, 2], "max_delay_s": [0.0, 0.002, 0.005]},
    )
    return all_candidates(spec, [VARIANT])


def _cost(candidate: Candidate) -> float:
    s = candidate.settings
    if s.max_batch_size == 1:
        return math.inf  # meets the SLO at no rate
    return abs(math.log2(s.max_batch_size) - 3) + s.workers + s.max_delay_s * 100


def test_keys_identify_settings_and_artifact_content() -> None:
    candidates = _candidates()
    assert len({c.key for c in candidates}) == len(candidates) == 36
    same = Candidate(Variant(Path("/elsewhere"), "m", "fp32", "c" * 64), 0, candidates[0].settings)
    assert same.key == candidates[0].key  # byte-identical artifact, same trial


def test_exhaustive_proposes_each_once_and_auto_picks_it_for_small_spaces() -> None:
    candidates = _candidates()
    strategy = choose("auto", candidates, max_trials=50, seed=0, early_stop_trials=5)
    assert isinstance(strategy, Exhaustive)
    seen = []
    while (candidate := strategy.propose()) is not None:
        seen.append(candidate.key)
        strategy.tell(candidate, _cost(candidate))
    assert seen == [c.key for c in candidates]
    assert isinstance(choose("auto", candidates, max_trials=10, seed=0, early_stop_trials=5), OptunaSearch)


def _run(strategy: OptunaSearch, budget: int) -> list[Candidate]:
    proposed: list[Candidate] = []
    while len(proposed) < budget and (candidate := strategy.propose()) is not None:
        proposed.append(candidate)
        strategy.tell(candidate, _cost(candidate))
    return proposed


def test_optuna_is_seeded_never_repeats_and_finds_a_cheap_configuration() -> None:
    first = _run(OptunaSearch(_candidates(), seed=7, early_stop_trials=100), budget=20)
    again = _run(OptunaSearch(_candidates(), seed=7, early_stop_trials=100), budget=20)
    assert [c.key for c in first] == [c.key for c in again]
    assert len({c.key for c in first}) == len(first) == 20
    best = min(_cost(c) for c in first)
    assert best <= 1.5  # the optimum is batch 8, 1 worker, no delay: cost 1.0


def test_optuna_stops_early_without_improvement_and_learns_from_a_resume() -> None:
    strategy = OptunaSearch(_candidates(), seed=1, early_stop_trials=3)
    # Resumed trials (never proposed by this study) are told their cost and count for early stopping.
    candidates = _candidates()
    best = next(c for c in candidates if c.settings == Settings(8, 0.0, 1, 0, 1))
    strategy.tell(best, _cost(best))
    proposed = _run(strategy, budget=36)
    assert len(proposed) == 3  # none beats the resumed optimum
    assert best.key not in {c.key for c in proposed}
