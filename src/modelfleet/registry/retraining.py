"""Retraining runs in a model's history: what triggered each, the data window, the hook, the gates, the outcome.

Append-only like the rollout history (SQLite triggers refuse UPDATE and DELETE), written once when a run
ends (skipped runs too), audited as `registry.retraining`. The version a run registers carries the same
trigger, window and hook in its lineage (`Lineage.retraining`), so `registry show` tells it too.
"""

from __future__ import annotations

from modelfleet.errors import NotFound
from modelfleet.registry import index
from modelfleet.registry.models import RetrainRecord
from modelfleet.registry.recording import storage_errors
from modelfleet.registry.store import INDEX_FILE, Registry


def record_retraining(registry: Registry, record: RetrainRecord) -> None:
    """Store ``record`` in ``record.name``'s history (audited with its actor and outcome)."""
    audited = registry.audit.operation(
        "registry.retraining",
        record.actor,
        model=record.name,
        run=record.id,
        fleet=record.fleet,
        parent_version=record.parent_version,
        new_version=record.new_version,
        retrain_outcome=record.outcome,
        reason=record.reason,
    )
    with (
        audited,
        storage_errors(registry.root, f"record retraining run {record.id}"),
        index.Index(registry.root / INDEX_FILE).connect(write=True) as conn,
    ):
        if not index.model_exists(conn, record.name):
            raise NotFound(f"model {record.name!r} is not in the registry at {registry.root}")
        conn.execute(
            "INSERT INTO retraining_runs (id, name, outcome, started_at, record_json) VALUES (?, ?, ?, ?, ?)",
            (record.id, record.name, record.outcome, record.started_at, record.model_dump_json()),
        )


def retraining_runs(registry: Registry, name: str) -> list[RetrainRecord]:
    """Every retraining run of model ``name``, oldest first."""
    with index.Index(registry.root / INDEX_FILE).connect() as conn:
        if not index.model_exists(conn, name):
            raise NotFound(f"model {name!r} is not in the registry at {registry.root}")
        rows = conn.execute(
            "SELECT record_json FROM retraining_runs WHERE name = ? ORDER BY started_at, rowid", (name,)
        ).fetchall()
    return [RetrainRecord.model_validate_json(row[0]) for row in rows]
