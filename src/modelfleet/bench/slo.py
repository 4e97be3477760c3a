"""SLO gates: parse ``"p99<100ms,error_rate<0.1%,throughput>500"`` and judge each point against them.

Metrics and units:
  latency  p50 p90 p95 p99 p99.9 max mean   value in ms (default), s or us: ``p99<100ms``, ``p50<=0.02s``
  rates    throughput goodput              responses per second: ``throughput>500``, ``goodput>=450/s``
  errors   error_rate                      fraction or percent: ``error_rate<0.1%``, ``error_rate<0.001``
Operators: ``<``, ``<=``, ``>``, ``>=``. Latency gates use the coordinated-omission corrected figure.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from modelfleet.bench.results import BenchResult, GateVerdict, PointSummary, SloReport
from modelfleet.errors import GateFailed, InvalidInput

LATENCY_METRICS = ("p50", "p90", "p95", "p99", "p99.9", "max", "mean")
RATE_METRICS = ("throughput", "goodput")
METRICS = (*LATENCY_METRICS, *RATE_METRICS, "error_rate")

_OPERATORS: dict[str, Callable[[float, float], bool]] = {
    "<=": operator.le,
    ">=": operator.ge,
    "<": operator.lt,
    ">": operator.gt,
}
_GATE = re.compile(
    r"^\s*(?P<metric>[a-z_]+[0-9.]*)\s*(?P<op><=|>=|<|>)\s*(?P<number>[0-9]*\.?[0-9]+(?:e-?[0-9]+)?)\s*(?P<unit>[a-z%/]*)\s*$"
)
_LATENCY_UNITS_MS = {"": 1.0, "ms": 1.0, "s": 1000.0, "us": 0.001, "µs": 0.001}
_RATE_UNITS = ("", "/s", "rps", "qps")
# Which latency gate sets the goodput limit: the highest percentile wins.
_GOODPUT_PRIORITY = ("max", "p99.9", "p99", "p95", "p90", "p50", "mean")


@dataclass(frozen=True, slots=True)
class Gate:
    metric: str
    op: str
    threshold: float  # ms for latency, per second for rates, fraction for error_rate
    text: str

    def holds(self, value: float) -> bool:
        return _OPERATORS[self.op](value, self.threshold)


def parse_slo(text: str | Sequence[str] | None) -> list[Gate]:
    """Parse gates from one comma-separated string or a list of them."""
    if text is None:
        return []
    parts = [text] if isinstance(text, str) else list(text)
    gates = []
    for part in parts:
        for item in part.split(","):
            if item.strip():
                gates.append(_parse_gate(item.strip()))
    return gates


def _parse_gate(item: str) -> Gate:
    match = _GATE.match(item.lower())
    if match is None:
        raise InvalidInput(
            f"SLO gate {item!r} is not METRIC OP VALUE[UNIT]; e.g. p99<100ms, error_rate<0.1%, throughput>500"
        )
    metric, op, number, unit = match["metric"], match["op"], float(match["number"]), match["unit"]
    if metric not in METRICS:
        raise InvalidInput(f"SLO gate {item!r}: unknown metric {metric!r}; use one of {', '.join(METRICS)}")
    if metric in LATENCY_METRICS:
        if unit not in _LATENCY_UNITS_MS:
            raise InvalidInput(f"SLO gate {item!r}: latency unit {unit!r} is not ms, s or us")
        threshold = number * _LATENCY_UNITS_MS[unit]
    elif metric in RATE_METRICS:
        if unit not in _RATE_UNITS:
            raise InvalidInput(f"SLO gate {item!r}: rate unit {unit!r} is not /s")
        threshold = number
    else:
        if unit not in ("", "%"):
            raise InvalidInput(f"SLO gate {item!r}: error_rate takes a fraction (0.001) or a percent (0.1%)")
        threshold = number / 100.0 if unit == "%" else number
        if threshold > 1.0:
            raise InvalidInput(f"SLO gate {item!r}: an error rate above 100% makes no sense")
    return Gate(metric, op, threshold, item)


def goodput_limit_ms(gates: Sequence[Gate]) -> float | None:
    """The latency a response may take and still count toward goodput, from the gates' upper bounds."""
    upper = {
        gate.metric: gate.threshold
        for gate in gates
        if gate.metric in LATENCY_METRICS and gate.op in ("<", "<=")
    }
    for metric in _GOODPUT_PRIORITY:
        if metric in upper:
            return upper[metric]
    return None


def measured_value(gate: Gate, summary: PointSummary) -> float | None:
    if gate.metric in LATENCY_METRICS:
        return summary.latency.get(gate.metric)
    if gate.metric == "throughput":
        return summary.throughput_per_s
    if gate.metric == "goodput":
        return summary.goodput_per_s
    return summary.error_rate


def evaluate(gates: Sequence[Gate], points: Sequence[tuple[int, PointSummary]]) -> SloReport:
    """Every gate must hold at every point. A point whose generator fell behind fails every gate."""
    verdicts = []
    for index, summary in points:
        for gate in gates:
            value = measured_value(gate, summary)
            notes = []
            if not summary.valid:
                passed = False
                notes.append("result invalid: the generator fell behind its schedule")
            elif value is None:
                passed = False
                notes.append("no successful responses to measure")
            else:
                passed = gate.holds(value)
            if gate.metric in summary.latency.thin_percentiles:
                notes.append(f"only {summary.latency.count} samples: {gate.metric} is not trustworthy")
            verdicts.append(
                GateVerdict(gate=gate.text, point=index, value=value, passed=passed, note="; ".join(notes))
            )
    return SloReport(
        gates=[gate.text for gate in gates], verdicts=verdicts, passed=all(v.passed for v in verdicts)
    )


def require_slo_passed(result: BenchResult) -> None:
    """Raise `GateFailed` naming the first failed gate and its point when the result's SLO failed."""
    if result.slo is None or result.slo.passed:
        return
    failed = [v for v in result.slo.verdicts if not v.passed]
    labels = {p.index: p.label for p in result.points}
    first = failed[0]
    raise GateFailed(
        f"SLO failed: {len(failed)} of {len(result.slo.verdicts)} checks, first {first.gate} at "
        f"{labels[first.point]} (measured {first.value if first.value is not None else 'nothing'})"
    )
