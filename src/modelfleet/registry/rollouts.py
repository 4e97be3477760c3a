"""Rollout records in a model's history: who rolled which version out through which fleet, how it went.

Append-only like the alias history (SQLite triggers refuse UPDATE and DELETE), written once when a rollout
ends, and audited as `registry.rollout`. The alias move a promotion makes is recorded beside it as an
ordinary `promote` event, so `registry history` and `registry rollouts` tell one story.
"""

from __future__ import annotations

from modelfleet.errors import NotFound
from modelfleet.registry import index
from modelfleet.registry.models import RolloutRecord
from modelfleet.registry.recording import storage_errors
from modelfleet.registry.store import INDEX_FILE, Registry


def record_rollout(registry: Registry, record: RolloutRecord) -> None:
    """Store ``record`` in ``record.name``'s history (audited with its actor and outcome)."""
    audited = registry.audit.operation(
        "registry.rollout",
        record.actor,
        model=record.name,
        rollout=record.id,
        fleet=record.fleet,
        from_version=record.from_version,
        to_version=record.to_version,
        rollout_outcome=record.outcome,
        reason=record.reason,
    )
    with (
        audited,
        storage_errors(registry.root, f"record rollout {record.id}"),
        index.Index(registry.root / INDEX_FILE).connect(write=True) as conn,
    ):
        if not index.model_exists(conn, record.name):
            raise NotFound(f"model {record.name!r} is not in the registry at {registry.root}")
        conn.execute(
            "INSERT INTO rollouts (id, name, from_version, to_version, outcome, actor, started_at, record_json)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                record.id,
                record.name,
                record.from_version,
                record.to_version,
                record.outcome,
                record.actor,
                record.started_at,
                record.model_dump_json(),
            ),
        )


def rollouts(registry: Registry, name: str) -> list[RolloutRecord]:
    """Every rollout of model ``name``, oldest first."""
    with index.Index(registry.root / INDEX_FILE).connect() as conn:
        if not index.model_exists(conn, name):
            raise NotFound(f"model {name!r} is not in the registry at {registry.root}")
        rows = conn.execute(
            "SELECT record_json FROM rollouts WHERE name = ? ORDER BY started_at, rowid", (name,)
        ).fetchall()
    return [RolloutRecord.model_validate_json(row[0]) for row in rows]
