"""The registry's SQLite index (WAL): versions, files, aliases, alias history, signatures, rollouts, retraining runs.

Versions and their files are immutable: triggers refuse UPDATE and DELETE, so no code path (ours or a
stray SQL shell) can rewrite history. A version row is inserted in the same transaction as its file rows,
and only after every blob is safely in the blob store.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from modelfleet.errors import Conflict
from modelfleet.registry.models import (
    AliasAction,
    AliasEvent,
    FileEntry,
    Lineage,
    ModelSummary,
    ModelVersion,
    SignatureRecord,
)

SCHEMA_VERSION = "1"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS versions (
  name TEXT NOT NULL, version INTEGER NOT NULL, created_at TEXT NOT NULL, actor TEXT NOT NULL,
  manifest_sha256 TEXT NOT NULL, size_bytes INTEGER NOT NULL, lineage_json TEXT NOT NULL,
  PRIMARY KEY (name, version)
);
CREATE TABLE IF NOT EXISTS files (
  name TEXT NOT NULL, version INTEGER NOT NULL, path TEXT NOT NULL, sha256 TEXT NOT NULL,
  size_bytes INTEGER NOT NULL,
  PRIMARY KEY (name, version, path),
  FOREIGN KEY (name, version) REFERENCES versions (name, version)
);
CREATE INDEX IF NOT EXISTS files_by_sha256 ON files (sha256);
CREATE TABLE IF NOT EXISTS aliases (
  name TEXT NOT NULL, alias TEXT NOT NULL, version INTEGER NOT NULL, updated_at TEXT NOT NULL,
  PRIMARY KEY (name, alias),
  FOREIGN KEY (name, version) REFERENCES versions (name, version)
);
CREATE TABLE IF NOT EXISTS alias_events (
  id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL, alias TEXT NOT NULL, action TEXT NOT NULL,
  from_version INTEGER, to_version INTEGER NOT NULL, reason TEXT NOT NULL, actor TEXT NOT NULL, at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS signatures (
  name TEXT NOT NULL, version INTEGER NOT NULL, key_id TEXT NOT NULL, public_key_b64 TEXT NOT NULL,
  signature_b64 TEXT NOT NULL, signed_at TEXT NOT NULL, actor TEXT NOT NULL,
  PRIMARY KEY (name, version, key_id),
  FOREIGN KEY (name, version) REFERENCES versions (name, version)
);
CREATE TABLE IF NOT EXISTS rollouts (
  id TEXT PRIMARY KEY, name TEXT NOT NULL, from_version INTEGER NOT NULL, to_version INTEGER NOT NULL,
  outcome TEXT NOT NULL, actor TEXT NOT NULL, started_at TEXT NOT NULL, record_json TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS retraining_runs (
  id TEXT PRIMARY KEY, name TEXT NOT NULL, outcome TEXT NOT NULL, started_at TEXT NOT NULL,
  record_json TEXT NOT NULL
);
CREATE TRIGGER IF NOT EXISTS retraining_no_update BEFORE UPDATE ON retraining_runs
  BEGIN SELECT RAISE(ABORT, 'retraining history is append-only'); END;
CREATE TRIGGER IF NOT EXISTS retraining_no_delete BEFORE DELETE ON retraining_runs
  BEGIN SELECT RAISE(ABORT, 'retraining history is append-only'); END;
CREATE TRIGGER IF NOT EXISTS rollouts_no_update BEFORE UPDATE ON rollouts
  BEGIN SELECT RAISE(ABORT, 'rollout history is append-only'); END;
CREATE TRIGGER IF NOT EXISTS rollouts_no_delete BEFORE DELETE ON rollouts
  BEGIN SELECT RAISE(ABORT, 'rollout history is append-only'); END;
CREATE TRIGGER IF NOT EXISTS versions_no_update BEFORE UPDATE ON versions
  BEGIN SELECT RAISE(ABORT, 'registry versions are immutable'); END;
CREATE TRIGGER IF NOT EXISTS versions_no_delete BEFORE DELETE ON versions
  BEGIN SELECT RAISE(ABORT, 'registry versions are immutable'); END;
CREATE TRIGGER IF NOT EXISTS files_no_update BEFORE UPDATE ON files
  BEGIN SELECT RAISE(ABORT, 'registry files are immutable'); END;
CREATE TRIGGER IF NOT EXISTS files_no_delete BEFORE DELETE ON files
  BEGIN SELECT RAISE(ABORT, 'registry files are immutable'); END;
CREATE TRIGGER IF NOT EXISTS events_no_update BEFORE UPDATE ON alias_events
  BEGIN SELECT RAISE(ABORT, 'alias history is append-only'); END;
CREATE TRIGGER IF NOT EXISTS events_no_delete BEFORE DELETE ON alias_events
  BEGIN SELECT RAISE(ABORT, 'alias history is append-only'); END;
"""


class Index:
    def __init__(self, path: Path) -> None:
        self.path = path

    @contextmanager
    def connect(self, write: bool = False) -> Iterator[sqlite3.Connection]:
        """A short-lived connection inside one transaction (IMMEDIATE for writers, so numbering cannot race)."""
        conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
        conn.row_factory = sqlite3.Row
        try:
            conn.execute("PRAGMA foreign_keys = ON")
            # FULL: a committed version survives power loss, not only a process crash.
            conn.execute("PRAGMA synchronous = FULL")
            conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        finally:
            conn.close()

    def initialise(self, defaults: dict[str, str]) -> dict[str, str]:
        """Create the schema if needed; store ``defaults`` for meta keys not yet set; return all meta."""
        conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("BEGIN IMMEDIATE")
            for statement in _statements(_SCHEMA):
                conn.execute(statement)
            for key, value in defaults.items():
                conn.execute("INSERT OR IGNORE INTO meta (key, value) VALUES (?, ?)", (key, value))
            meta = {row[0]: row[1] for row in conn.execute("SELECT key, value FROM meta")}
            conn.execute("COMMIT")
            return meta
        finally:
            conn.close()


def _statements(script: str) -> list[str]:
    """Split the schema into statements; triggers contain ';' inside BEGIN … END."""
    statements: list[str] = []
    current: list[str] = []
    for line in script.strip().splitlines():
        current.append(line)
        text = "\n".join(current).strip()
        if sqlite3.complete_statement(text):
            statements.append(text)
            current = []
    return statements


def model_exists(conn: sqlite3.Connection, name: str) -> bool:
    return conn.execute("SELECT 1 FROM versions WHERE name = ? LIMIT 1", (name,)).fetchone() is not None


def version_numbers(conn: sqlite3.Connection, name: str) -> list[int]:
    return [
        row[0]
        for row in conn.execute("SELECT version FROM versions WHERE name = ? ORDER BY version", (name,))
    ]


def model_names(conn: sqlite3.Connection) -> list[str]:
    return [row[0] for row in conn.execute("SELECT DISTINCT name FROM versions ORDER BY name")]


def refuse_duplicate(conn: sqlite3.Connection, name: str, manifest_sha256: str) -> None:
    """Conflict when a version of `name` already holds exactly this artifact."""
    existing = version_with_manifest(conn, name, manifest_sha256)
    if existing is not None:
        raise Conflict(
            f"{name}:{existing} already holds exactly this artifact (manifest sha256 {manifest_sha256[:12]}…); "
            "nothing added — point an alias at it instead"
        )


def version_with_manifest(conn: sqlite3.Connection, name: str, manifest_sha256: str) -> int | None:
    row = conn.execute(
        "SELECT version FROM versions WHERE name = ? AND manifest_sha256 = ? ORDER BY version LIMIT 1",
        (name, manifest_sha256),
    ).fetchone()
    return None if row is None else int(row[0])


def aliases_of(conn: sqlite3.Connection, name: str) -> dict[str, int]:
    rows = conn.execute("SELECT alias, version FROM aliases WHERE name = ? ORDER BY alias", (name,))
    return {row[0]: int(row[1]) for row in rows}


def load_version(conn: sqlite3.Connection, name: str, version: int) -> ModelVersion | None:
    row = conn.execute("SELECT * FROM versions WHERE name = ? AND version = ?", (name, version)).fetchone()
    if row is None:
        return None
    files = [
        FileEntry(path=f["path"], sha256=f["sha256"], size_bytes=f["size_bytes"])
        for f in conn.execute(
            "SELECT path, sha256, size_bytes FROM files WHERE name = ? AND version = ? ORDER BY path",
            (name, version),
        )
    ]
    signatures = [
        SignatureRecord(
            key_id=s["key_id"],
            public_key_b64=s["public_key_b64"],
            signature_b64=s["signature_b64"],
            signed_at=s["signed_at"],
            actor=s["actor"],
        )
        for s in conn.execute(
            "SELECT * FROM signatures WHERE name = ? AND version = ? ORDER BY signed_at, key_id",
            (name, version),
        )
    ]
    aliases = [
        a[0]
        for a in conn.execute(
            "SELECT alias FROM aliases WHERE name = ? AND version = ? ORDER BY alias", (name, version)
        )
    ]
    return ModelVersion(
        name=row["name"],
        version=row["version"],
        created_at=row["created_at"],
        actor=row["actor"],
        manifest_sha256=row["manifest_sha256"],
        size_bytes=row["size_bytes"],
        files=files,
        lineage=Lineage.model_validate_json(row["lineage_json"]),
        aliases=aliases,
        signatures=signatures,
    )


def insert_version(conn: sqlite3.Connection, version: ModelVersion) -> None:
    conn.execute(
        "INSERT INTO versions (name, version, created_at, actor, manifest_sha256, size_bytes, lineage_json)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)",
        (
            version.name,
            version.version,
            version.created_at,
            version.actor,
            version.manifest_sha256,
            version.size_bytes,
            json.dumps(version.lineage.model_dump(mode="json"), sort_keys=True),
        ),
    )
    conn.executemany(
        "INSERT INTO files (name, version, path, sha256, size_bytes) VALUES (?, ?, ?, ?, ?)",
        [(version.name, version.version, f.path, f.sha256, f.size_bytes) for f in version.files],
    )
    for signature in version.signatures:
        insert_signature(conn, version.name, version.version, signature)


def insert_signature(conn: sqlite3.Connection, name: str, version: int, signature: SignatureRecord) -> None:
    conn.execute(
        "INSERT OR REPLACE INTO signatures (name, version, key_id, public_key_b64, signature_b64, signed_at, actor)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)",
        (
            name,
            version,
            signature.key_id,
            signature.public_key_b64,
            signature.signature_b64,
            signature.signed_at,
            signature.actor,
        ),
    )


def set_alias(conn: sqlite3.Connection, name: str, alias: str, version: int, at: str) -> None:
    conn.execute(
        "INSERT INTO aliases (name, alias, version, updated_at) VALUES (?, ?, ?, ?)"
        " ON CONFLICT (name, alias) DO UPDATE SET version = excluded.version, updated_at = excluded.updated_at",
        (name, alias, version, at),
    )


def insert_event(
    conn: sqlite3.Connection,
    *,
    name: str,
    alias: str,
    action: AliasAction,
    from_version: int | None,
    to_version: int,
    reason: str,
    actor: str,
    at: str,
) -> AliasEvent:
    cursor = conn.execute(
        "INSERT INTO alias_events (name, alias, action, from_version, to_version, reason, actor, at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (name, alias, action, from_version, to_version, reason, actor, at),
    )
    assert cursor.lastrowid is not None
    return AliasEvent(
        id=cursor.lastrowid,
        name=name,
        alias=alias,
        action=action,
        from_version=from_version,
        to_version=to_version,
        reason=reason,
        actor=actor,
        at=at,
    )


def events(conn: sqlite3.Connection, name: str, alias: str | None = None) -> list[AliasEvent]:
    if alias is None:
        rows = conn.execute("SELECT * FROM alias_events WHERE name = ? ORDER BY id", (name,))
    else:
        rows = conn.execute(
            "SELECT * FROM alias_events WHERE name = ? AND alias = ? ORDER BY id", (name, alias)
        )
    return [
        AliasEvent(
            id=r["id"],
            name=r["name"],
            alias=r["alias"],
            action=r["action"],
            from_version=r["from_version"],
            to_version=r["to_version"],
            reason=r["reason"],
            actor=r["actor"],
            at=r["at"],
        )
        for r in rows
    ]


def summaries(conn: sqlite3.Connection) -> list[ModelSummary]:
    rows = conn.execute(
        "SELECT name, MAX(version) AS latest, COUNT(*) AS count, MAX(created_at) AS updated_at"
        " FROM versions GROUP BY name ORDER BY name"
    )
    return [
        ModelSummary(
            name=r["name"],
            latest_version=r["latest"],
            version_count=r["count"],
            aliases=aliases_of(conn, r["name"]),
            updated_at=r["updated_at"],
        )
        for r in rows.fetchall()
    ]


def blob_users(conn: sqlite3.Connection, names: list[tuple[str, int]] | None = None) -> dict[str, list[str]]:
    """sha256 → ``NAME:VERSION/PATH`` of every file that needs it (all versions, or just ``names``)."""
    users: dict[str, list[str]] = {}
    if names is None:
        rows = conn.execute(
            "SELECT name, version, path, sha256 FROM files ORDER BY name, version, path"
        ).fetchall()
    else:
        rows = []
        for name, version in names:
            rows.extend(
                conn.execute(
                    "SELECT name, version, path, sha256 FROM files WHERE name = ? AND version = ? ORDER BY path",
                    (name, version),
                ).fetchall()
            )
    for r in rows:
        users.setdefault(r["sha256"], []).append(f"{r['name']}:{r['version']}/{r['path']}")
    return users


def integrity_problems(conn: sqlite3.Connection) -> list[str]:
    results = [row[0] for row in conn.execute("PRAGMA quick_check")]
    return [] if results == ["ok"] else results
