"""Retraining runs in a model's history: what triggered each, the data window, the hook, the gates, the outcome.

Append-only like the rollout history (SQLite triggers refuse UPDATE and DELETE), written once when a run
ends (skipped runs too), audited as `registry.retraining`. The version a run registers carries the same
trigger, window and hook in its lineage (`Lineage.retraining`), so `registry show` tells it too.
"""

from __future__ import annotations

from modelfleet.registry.models import RetrainRecord
from modelfleet.registry.records import append_record, read_records
from modelfleet.registry.store import Registry


def record_retraining(registry: Registry, record: RetrainRecord) -> None:
    """Store ``record`` in ``record.name``'s history (audited with its actor and outcome)."""
    append_record(
        registry,
        operation="registry.retraining",
        actor=record.actor,
        model=record.name,
        action=f"record retraining run {record.id}",
        sql="INSERT INTO retraining_runs (id, name, outcome, started_at, record_json) VALUES (?, ?, ?, ?, ?)",
        params=(record.id, record.name, record.outcome, record.started_at, record.model_dump_json()),
        run=record.id,
        fleet=record.fleet,
        parent_version=record.parent_version,
        new_version=record.new_version,
        retrain_outcome=record.outcome,
        reason=record.reason,
    )


def retraining_runs(registry: Registry, name: str) -> list[RetrainRecord]:
    """Every retraining run of model ``name``, oldest first."""
    return [
        RetrainRecord.model_validate_json(text) for text in read_records(registry, "retraining_runs", name)
    ]
