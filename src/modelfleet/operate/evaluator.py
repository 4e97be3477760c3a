"""The embedded alert evaluator: the fleet's own rules on the fleet's own metrics, no Prometheus needed.

`SeriesStore` keeps the samples the rules select (nothing else: a router exposes ~25 bucket series a
model and only the one at the SLO threshold is kept), each for as long as the longest rule window,
and at most `max_series` series. `RuleEvaluator.evaluate(store, now)` is a pure step with `now`
passed in: it computes each rule's conditions as Prometheus 2.x does (range selectors take samples in
[now - window, now]; `rate` and `increase` use Prometheus's extrapolation, including counter resets
and the zero clamp; `max` takes each series' latest sample within the lookback) and applies `for:`
as Prometheus's rule manager does (pending from the first true evaluation, firing once it has been
true for `for` seconds, gone at the first false one). `time_scale` multiplies every window and `for`,
so a 1-hour window runs in 3.6 s at 0.001. The agreement test holds it to `promtool test rules`.
"""

from __future__ import annotations

import bisect
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass

from modelfleet.operate.rules import AlertRule, Condition, Expr, GaugeMax, Increase, RateRatio, Selector

LabelSet = tuple[tuple[str, str], ...]
# Prometheus's default lookback for an instant selector (a gauge's last sample counts this long).
LOOKBACK_S = 300.0


def _matches(selector: Selector, metric: str, labels: dict[str, str]) -> bool:
    if metric != selector.metric:
        return False
    for name, op, value in selector.matchers:
        have = labels.get(name, "")
        if op == "=" and have != value:
            return False
        if op == "!=" and have == value:
            return False
        if op in ("=~", "!~") and (re.fullmatch(value, have) is not None) != (op == "=~"):
            return False
    return True


def _selectors(rules: Iterable[AlertRule]) -> list[Selector]:
    found: list[Selector] = []
    for rule in rules:
        for condition in rule.conditions:
            expr = condition.expr
            parts = [expr.num, expr.den] if isinstance(expr, RateRatio) else [expr.series]
            found.extend(part for part in parts if part not in found)
    return found


class Samples:
    """One series, in time order: times, values, and values adjusted for counter resets (each reset adds
    the value before it, as Prometheus's `rate` loop does), so a window's increase is two bisects and a
    subtraction instead of a pass over every sample in it (a 3-day window at 15 s holds 17,280)."""

    __slots__ = ("adjusted", "times", "values")

    def __init__(self) -> None:
        self.times: list[float] = []
        self.values: list[float] = []
        self.adjusted: list[float] = []

    def append(self, at: float, value: float) -> None:
        if self.times and at <= self.times[-1]:
            return  # a repeated or late scrape: Prometheus keeps one sample per timestamp, in order
        carry = self.adjusted[-1] - self.values[-1] if self.values else 0.0
        if self.values and value < self.values[-1]:
            carry += self.values[-1]
        self.times.append(at)
        self.values.append(value)
        self.adjusted.append(value + carry)

    def trim(self, horizon: float) -> None:
        stale = bisect.bisect_left(self.times, horizon)
        if stale > 64 and 2 * stale > len(self.times):  # amortised: cut the stale half at once
            del self.times[:stale], self.values[:stale], self.adjusted[:stale]

    def increase(self, start: float, end: float) -> float | None:
        """Prometheus's `increase` over [start, end]; None with fewer than two samples in it."""
        lo = bisect.bisect_left(self.times, start)
        hi = bisect.bisect_right(self.times, end) - 1
        if hi - lo < 1:
            return None
        delta = self.adjusted[hi] - self.adjusted[lo]
        return _extrapolate(delta, self.times[lo], self.values[lo], self.times[hi], hi - lo + 1, start, end)

    def latest(self, start: float, end: float) -> float | None:
        """The last sample's value at or before `end`, if it is not older than `start`."""
        index = bisect.bisect_right(self.times, end) - 1
        return self.values[index] if index >= 0 and self.times[index] >= start else None


class SeriesStore:
    """Samples of the series some rule selects, each kept `retention_s` seconds, at most `max_series`."""

    def __init__(self, rules: list[AlertRule], retention_s: float, max_series: int = 10_000) -> None:
        self.selectors = _selectors(rules)
        self.retention_s = retention_s
        self.max_series = max_series
        self.dropped_series = 0  # series past max_series, not kept (a figure for the log)
        self._series: dict[tuple[str, LabelSet], Samples] = {}
        self._by_selector: dict[Selector, list[Samples]] = {s: [] for s in self.selectors}

    def add(self, at: float, metric: str, labels: dict[str, str], value: float) -> None:
        key = (metric, tuple(sorted(labels.items())))
        samples = self._series.get(key)
        if samples is None:
            wanted = [s for s in self.selectors if _matches(s, metric, labels)]
            if not wanted:
                return
            if len(self._series) >= self.max_series:
                self.dropped_series += 1
                return
            samples = self._series[key] = Samples()
            for selector in wanted:
                self._by_selector[selector].append(samples)
        samples.append(at, value)
        samples.trim(at - self.retention_s)

    def select(self, selector: Selector) -> list[Samples]:
        return self._by_selector.get(selector, [])


def extrapolated_delta(samples: list[tuple[float, float]], start: float, end: float) -> float | None:
    """Prometheus's `increase` of a counter over [start, end] from the samples in it (None below 2)."""
    if len(samples) < 2:
        return None
    delta = samples[-1][1] - samples[0][1]
    previous = 0.0
    for _, value in samples:  # a counter reset: the value before it was counted, then counting restarts
        if value < previous:
            delta += previous
        previous = value
    return _extrapolate(delta, samples[0][0], samples[0][1], samples[-1][0], len(samples), start, end)


def _extrapolate(
    delta: float, first_t: float, first_v: float, last_t: float, count: int, start: float, end: float
) -> float:
    """Prometheus's extrapolation of a counter's delta between its first and last sample to the window."""
    sampled_s = last_t - first_t
    average_s = sampled_s / (count - 1)
    to_start, to_end = first_t - start, end - last_t
    if delta > 0 and first_v >= 0:  # a counter does not extrapolate below zero
        to_start = min(to_start, sampled_s * (first_v / delta))
    threshold_s = average_s * 1.1
    interval_s = sampled_s
    interval_s += to_start if to_start < threshold_s else average_s / 2
    interval_s += to_end if to_end < threshold_s else average_s / 2
    return delta * (interval_s / sampled_s)


@dataclass(frozen=True, slots=True)
class Transition:
    """An alert that started firing or resolved at `at`."""

    rule: AlertRule
    status: str  # "firing" or "resolved"
    at: float
    value: float | None


class RuleEvaluator:
    """Evaluates rules step by step; keeps which are pending (since when) and which fire."""

    def __init__(
        self, rules: list[AlertRule], time_scale: float = 1.0, lookback_s: float = LOOKBACK_S
    ) -> None:
        self.rules = rules
        self.time_scale = time_scale
        self.lookback_s = lookback_s
        self._active_since: dict[int, float] = {}
        self.firing: set[int] = set()

    def evaluate(self, store: SeriesStore, now: float) -> list[Transition]:
        transitions = []
        for index, rule in enumerate(self.rules):
            value = self._rule_value(store, rule, now)
            if value is None:
                self._active_since.pop(index, None)
                if index in self.firing:
                    self.firing.discard(index)
                    transitions.append(Transition(rule, "resolved", now, None))
                continue
            since = self._active_since.setdefault(index, now)
            if index not in self.firing and now - since >= rule.for_s * self.time_scale:
                self.firing.add(index)
                transitions.append(Transition(rule, "firing", now, value))
        return transitions

    def _rule_value(self, store: SeriesStore, rule: AlertRule, now: float) -> float | None:
        """The first condition's value when every condition holds (as PromQL's `and` keeps the left side)."""
        values = [self._condition_value(store, c, now) for c in rule.conditions]
        return values[0] if all(v is not None for v in values) else None

    def _condition_value(self, store: SeriesStore, condition: Condition, now: float) -> float | None:
        value = self.expr_value(store, condition.expr, now)
        if value is None or math.isnan(value):
            return None
        holds = value > condition.threshold if condition.op == ">" else value < condition.threshold
        return value if holds else None

    def expr_value(self, store: SeriesStore, expr: Expr, now: float) -> float | None:
        """An expression's value at `now`, None where PromQL gives an empty result."""
        if isinstance(expr, GaugeMax):
            latest = [s.latest(now - self.lookback_s, now) for s in store.select(expr.series)]
            present = [v for v in latest if v is not None]
            return max(present) if present else None
        window_s = expr.window_s * self.time_scale
        if isinstance(expr, Increase):
            return _summed_delta(store, expr.series, now, window_s)
        # sum(rate(a[w])) / sum(rate(b[w])): rate is increase / w, so the ratio is one of increases.
        num = _summed_delta(store, expr.num, now, window_s)
        den = _summed_delta(store, expr.den, now, window_s)
        if num is None or den is None:
            return None
        ratio = num / den if den != 0 else (math.nan if num == 0 else math.copysign(math.inf, num))
        return 1 - ratio if expr.complement else ratio


def _summed_delta(store: SeriesStore, selector: Selector, now: float, window_s: float) -> float | None:
    deltas = []
    for samples in store.select(selector):
        delta = samples.increase(now - window_s, now)
        if delta is not None:
            deltas.append(delta)
    return sum(deltas) if deltas else None
