"""Checks of the fleet's Grafana dashboard without a Grafana (the Debian archive has none): a JSON schema of
the dashboard model's fields that modelfleet uses, and the metric names each PromQL query selects."""

from __future__ import annotations

import re
from typing import Any

_TARGET = {
    "type": "object",
    "required": ["refId", "expr", "datasource"],
    "properties": {
        "refId": {"type": "string", "pattern": "^[A-Z]+$"},
        "expr": {"type": "string", "minLength": 1},
        "legendFormat": {"type": "string"},
        "datasource": {"$ref": "#/$defs/datasource"},
    },
}
# The fields of Grafana's dashboard JSON model (schemaVersion 39) that the rendered dashboard uses.
GRAFANA_DASHBOARD_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "required": ["uid", "title", "schemaVersion", "panels", "time", "templating", "annotations"],
    "properties": {
        "uid": {"type": "string", "minLength": 1, "maxLength": 40, "pattern": "^[a-zA-Z0-9_-]+$"},
        "title": {"type": "string", "minLength": 1},
        "tags": {"type": "array", "items": {"type": "string"}},
        "timezone": {"enum": ["utc", "browser", ""]},
        "schemaVersion": {"type": "integer", "minimum": 30},
        "refresh": {"type": "string", "pattern": "^[0-9]+[smhd]$"},
        "time": {
            "type": "object",
            "required": ["from", "to"],
            "properties": {"from": {"type": "string"}, "to": {"type": "string"}},
        },
        "templating": {
            "type": "object",
            "required": ["list"],
            "properties": {
                "list": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["name", "type"],
                        "properties": {
                            "type": {"enum": ["datasource", "query", "custom", "constant", "interval"]}
                        },
                    },
                }
            },
        },
        "annotations": {
            "type": "object",
            "properties": {
                "list": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["name", "datasource", "enable", "expr"],
                        "properties": {
                            "datasource": {"$ref": "#/$defs/datasource"},
                            "enable": {"type": "boolean"},
                            "iconColor": {"type": "string"},
                        },
                    },
                }
            },
        },
        "panels": {"type": "array", "minItems": 1, "items": {"$ref": "#/$defs/panel"}},
    },
    "$defs": {
        "datasource": {
            "type": "object",
            "required": ["type", "uid"],
            "properties": {"type": {"const": "prometheus"}, "uid": {"type": "string"}},
        },
        "panel": {
            "type": "object",
            "required": ["id", "type", "title", "gridPos", "targets", "datasource"],
            "properties": {
                "id": {"type": "integer", "minimum": 1},
                "type": {"enum": ["timeseries", "stat", "gauge", "table", "bargauge"]},
                "title": {"type": "string", "minLength": 1},
                "datasource": {"$ref": "#/$defs/datasource"},
                "gridPos": {
                    "type": "object",
                    "required": ["x", "y", "w", "h"],
                    "properties": {
                        "x": {"type": "integer", "minimum": 0, "maximum": 23},
                        "y": {"type": "integer", "minimum": 0},
                        "w": {"type": "integer", "minimum": 1, "maximum": 24},
                        "h": {"type": "integer", "minimum": 1},
                    },
                },
                "fieldConfig": {"type": "object", "properties": {"defaults": {"type": "object"}}},
                "targets": {"type": "array", "minItems": 1, "items": _TARGET},
            },
        },
    },
}
_PROMQL_WORDS = {
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "and",
    "or",
    "unless",
    "offset",
    "inf",
    "nan",
}
# Series Prometheus itself makes (alert state), not scraped from the fleet.
PROMETHEUS_SERIES = {"ALERTS", "ALERTS_FOR_STATE"}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (functions, label lists, strings and ranges left out)."""
    stripped = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    stripped = re.sub(r"\{[^}]*\}", "", stripped)
    stripped = re.sub(r"\[[^\]]*\]", "", stripped)
    stripped = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", stripped)
    stripped = re.sub(r"\boffset\s+-?[0-9][0-9smhdwy]*", "", stripped)
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", stripped):
        rest = stripped[match.end() :].lstrip()
        if not rest.startswith("(") and match.group().lower() not in _PROMQL_WORDS:
            names.add(match.group())
    return names
