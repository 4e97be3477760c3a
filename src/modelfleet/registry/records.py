"""Append-only record tables of a model's history (rollouts, retraining runs): one audited insert, one read.

Both tables hold a whole record as JSON beside the columns they are looked up by; SQLite triggers refuse
UPDATE and DELETE on them (registry/index.py).
"""

from __future__ import annotations

from typing import Any

from modelfleet.errors import NotFound
from modelfleet.registry import index
from modelfleet.registry.recording import storage_errors
from modelfleet.registry.store import INDEX_FILE, Registry


def append_record(
    registry: Registry,
    *,
    operation: str,
    actor: str,
    model: str,
    action: str,
    sql: str,
    params: tuple[Any, ...],
    **audit_fields: Any,
) -> None:
    """Insert one row with ``sql`` for ``model`` (which must exist), audited as ``operation``."""
    audited = registry.audit.operation(operation, actor, model=model, **audit_fields)
    with (
        audited,
        storage_errors(registry.root, action),
        index.Index(registry.root / INDEX_FILE).connect(write=True) as conn,
    ):
        if not index.model_exists(conn, model):
            raise NotFound(f"model {model!r} is not in the registry at {registry.root}")
        conn.execute(sql, params)


def read_records(registry: Registry, table: str, model: str) -> list[str]:
    """The `record_json` of every row of ``table`` for ``model``, oldest first."""
    with index.Index(registry.root / INDEX_FILE).connect() as conn:
        if not index.model_exists(conn, model):
            raise NotFound(f"model {model!r} is not in the registry at {registry.root}")
        rows = conn.execute(
            f"SELECT record_json FROM {table} WHERE name = ? ORDER BY started_at, rowid",
            (model,),
        ).fetchall()
    return [row[0] for row in rows]
