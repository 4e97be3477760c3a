"""PromQL text and Prometheus rule groups from the rule data of `modelfleet.operate.rules`.

Only rendering: the embedded evaluator works on the same data, so the two cannot drift apart by a
parsing difference. Every expression sums over all series without `by`, so the alert carries exactly
the rule's own labels, in Prometheus as in the evaluator.
"""

from __future__ import annotations

import json
from typing import Any

from modelfleet.operate.rules import (
    AlertRule,
    Condition,
    Expr,
    GaugeMax,
    Increase,
    Selector,
    duration_text,
)


def selector_text(selector: Selector) -> str:
    if not selector.matchers:
        return selector.metric
    # json.dumps quotes and escapes like a PromQL string literal for every value we produce.
    inner = ",".join(f"{name}{op}{json.dumps(value)}" for name, op, value in selector.matchers)
    return f"{selector.metric}{{{inner}}}"


def expr_text(expr: Expr) -> str:
    if isinstance(expr, GaugeMax):
        return f"max({selector_text(expr.series)})"
    window = duration_text(expr.window_s)
    if isinstance(expr, Increase):
        return f"sum(increase({selector_text(expr.series)}[{window}]))"
    ratio = f"sum(rate({selector_text(expr.num)}[{window}])) / sum(rate({selector_text(expr.den)}[{window}]))"
    return f"(1 - {ratio})" if expr.complement else f"({ratio})"


def condition_text(condition: Condition) -> str:
    return f"{expr_text(condition.expr)} {condition.op} {condition.threshold!r}"


def rule_expr(rule: AlertRule) -> str:
    return " and ".join(condition_text(c) for c in rule.conditions)


def prometheus_rule(rule: AlertRule) -> dict[str, Any]:
    """One alerting rule as Prometheus (and the operator's PrometheusRule) takes it."""
    rendered: dict[str, Any] = {"alert": rule.name, "expr": rule_expr(rule)}
    if rule.for_s > 0:
        rendered["for"] = duration_text(rule.for_s)
    rendered["labels"] = rule.all_labels
    rendered["annotations"] = {"summary": rule.summary}
    return rendered


def rule_groups(fleet: str, rules: list[AlertRule], interval_s: float) -> list[dict[str, Any]]:
    """The `groups:` of a rule file: one group per fleet, evaluated every ``interval_s``."""
    return [
        {
            "name": f"{fleet}.slo",
            "interval": duration_text(interval_s),
            "rules": [prometheus_rule(rule) for rule in rules],
        }
    ]
