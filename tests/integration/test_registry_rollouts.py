"""Rollout records in the registry: stored in the model's history, audited, append-only."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from tests.support.linear_model import make_artifact

from modelfleet.errors import NotFound
from modelfleet.registry import Registry
from modelfleet.registry.models import RolloutRecord
from modelfleet.registry.rollouts import record_rollout, rollouts


def _record(rollout_id: str, name: str = "linear") -> RolloutRecord:
    return RolloutRecord(
        id=rollout_id, name=name, alias="production", fleet="f", fleet_model=name, from_version=1,
        to_version=2, actor="ci", outcome="rolled_back", reason="canary error rate", started_at="2026-12-01T00:00:00Z",
        finished_at="2026-12-01T00:00:05Z", duration_s=5.0, schedule_percent=[10.0, 100.0], rollback_s=0.2,
    )  # fmt: skip


def test_records_are_kept_in_order_audited_and_never_rewritten(tmp_path: Path) -> None:
    registry = Registry(tmp_path / "registry")
    registry.add(make_artifact(tmp_path / "v1", "linear", 1), actor="ci")
    record_rollout(registry, _record("a1"))
    record_rollout(registry, _record("b2").model_copy(update={"outcome": "promoted"}))
    assert [(r.id, r.outcome) for r in rollouts(registry, "linear")] == [
        ("a1", "rolled_back"),
        ("b2", "promoted"),
    ]
    audit = [json.loads(line) for line in (registry.root / "audit.jsonl").read_text().splitlines()]
    rollout_lines = [line for line in audit if line["event"] == "registry.rollout"]
    assert [line["rollout"] for line in rollout_lines] == ["a1", "b2"]
    assert rollout_lines[0]["actor"] == "ci" and rollout_lines[0]["outcome"] == "ok"
    with sqlite3.connect(registry.root / "index.sqlite") as conn, pytest.raises(sqlite3.IntegrityError):
        conn.execute("UPDATE rollouts SET outcome = 'promoted' WHERE id = 'a1'")
    with sqlite3.connect(registry.root / "index.sqlite") as conn, pytest.raises(sqlite3.IntegrityError):
        conn.execute("DELETE FROM rollouts")


def test_unknown_model_is_not_found(tmp_path: Path) -> None:
    registry = Registry(tmp_path / "registry")
    registry.add(make_artifact(tmp_path / "v1", "linear", 1), actor="ci")
    with pytest.raises(NotFound, match="model 'other'"):
        record_rollout(registry, _record("c3", name="other"))
    with pytest.raises(NotFound, match="model 'other'"):
        rollouts(registry, "other")
    failed = [json.loads(line) for line in (registry.root / "audit.jsonl").read_text().splitlines()][-1]
    assert failed["event"] == "registry.rollout" and failed["outcome"] == "failed: NotFound"
