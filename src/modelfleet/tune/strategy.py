"""Which configuration to try next: every one in order (exhaustive), or Optuna's seeded TPE sampler.

A strategy proposes candidates and is told each one's cost (lower is better, `inf` for a trial that met
the SLO at no rate). Optuna proposes a configuration it already tried now and then; that one is told its
cached cost at once instead of being measured again. The Optuna search stops early after
``early_stop_trials`` measured trials in a row without a cheaper configuration, or when it has seen
every configuration.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Protocol

from modelfleet.tune.space import Candidate

_MAX_REPEATED_ASKS = 200


class Strategy(Protocol):
    name: str

    def propose(self) -> Candidate | None: ...

    def tell(self, candidate: Candidate, cost: float) -> None: ...


class Exhaustive:
    name = "exhaustive"

    def __init__(self, candidates: Sequence[Candidate]) -> None:
        self._pending = list(candidates)
        self._done: set[str] = set()

    def propose(self) -> Candidate | None:
        while self._pending:
            candidate = self._pending.pop(0)
            if candidate.key not in self._done:
                return candidate
        return None

    def tell(self, candidate: Candidate, cost: float) -> None:
        self._done.add(candidate.key)


class OptunaSearch:
    name = "optuna"

    def __init__(self, candidates: Sequence[Candidate], seed: int, early_stop_trials: int) -> None:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self._optuna = optuna
        self._candidates = list(candidates)
        self._by_key = {c.key: c for c in self._candidates}
        self._distribution = optuna.distributions.CategoricalDistribution(list(range(len(self._candidates))))
        self._study = optuna.create_study(direction="minimize", sampler=optuna.samplers.TPESampler(seed=seed))
        self._costs: dict[str, float] = {}
        self._asked: dict[str, optuna.trial.Trial] = {}
        self._best = math.inf
        self._since_best = 0
        self._early_stop = early_stop_trials

    def _tell_study(self, trial: object, cost: float) -> None:
        # Optuna cannot minimise inf; a large finite cost keeps the sampler away from failures.
        self._study.tell(trial, cost if math.isfinite(cost) else 1e12)  # type: ignore[arg-type]

    def propose(self) -> Candidate | None:
        if self._since_best >= self._early_stop or len(self._costs) >= len(self._candidates):
            return None
        for _ in range(_MAX_REPEATED_ASKS):
            trial = self._study.ask({"candidate": self._distribution})
            candidate = self._candidates[int(trial.params["candidate"])]
            if candidate.key in self._costs:
                self._tell_study(trial, self._costs[candidate.key])
                continue
            self._asked[candidate.key] = trial
            return candidate
        # The sampler keeps proposing measured configurations: take the first one not yet measured.
        rest = [c for c in self._candidates if c.key not in self._costs]
        return rest[0] if rest else None

    def tell(self, candidate: Candidate, cost: float) -> None:
        self._costs[candidate.key] = cost
        trial = self._asked.pop(candidate.key, None)
        if trial is not None:
            self._tell_study(trial, cost)
        else:  # from a resumed checkpoint (or picked past the sampler): teach the sampler what it cost
            self._study.add_trial(
                self._optuna.trial.create_trial(
                    params={"candidate": self._candidates.index(candidate)},
                    distributions={"candidate": self._distribution},
                    value=cost if math.isfinite(cost) else 1e12,
                )
            )
        if cost < self._best:
            self._best, self._since_best = cost, 0
        else:
            self._since_best += 1


def choose(
    name: str, candidates: Sequence[Candidate], max_trials: int, seed: int, early_stop_trials: int
) -> Strategy:
    """``auto`` is exhaustive when every candidate fits in the trial budget, Optuna otherwise."""
    if name == "exhaustive" or (name == "auto" and len(candidates) <= max_trials):
        return Exhaustive(candidates)
    return OptunaSearch(candidates, seed, early_stop_trials)
