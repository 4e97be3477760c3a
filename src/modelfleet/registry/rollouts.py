"""Rollout records in a model's history: who rolled which version out through which fleet, how it went.

Append-only like the alias history (SQLite triggers refuse UPDATE and DELETE), written once when a rollout
ends, and audited as `registry.rollout`. The alias move a promotion makes is recorded beside it as an
ordinary `promote` event, so `registry history` and `registry rollouts` tell one story.
"""

from __future__ import annotations

from modelfleet.registry.models import RolloutRecord
from modelfleet.registry.records import append_record, read_records
from modelfleet.registry.store import Registry


def record_rollout(registry: Registry, record: RolloutRecord) -> None:
    """Store ``record`` in ``record.name``'s history (audited with its actor and outcome)."""
    append_record(
        registry,
        operation="registry.rollout",
        actor=record.actor,
        model=record.name,
        action=f"record rollout {record.id}",
        sql="INSERT INTO rollouts (id, name, from_version, to_version, outcome, actor, started_at, record_json)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        params=(
            record.id,
            record.name,
            record.from_version,
            record.to_version,
            record.outcome,
            record.actor,
            record.started_at,
            record.model_dump_json(),
        ),
        rollout=record.id,
        fleet=record.fleet,
        from_version=record.from_version,
        to_version=record.to_version,
        rollout_outcome=record.outcome,
        reason=record.reason,
    )


def rollouts(registry: Registry, name: str) -> list[RolloutRecord]:
    """Every rollout of model ``name``, oldest first."""
    return [RolloutRecord.model_validate_json(text) for text in read_records(registry, "rollouts", name)]
