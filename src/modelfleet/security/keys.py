"""API key store: keys are shown once at creation and kept only as salted argon2id hashes.

A key reads ``mf_<id>_<secret>``: the 8-character id is public (``keys list`` and the audit log name keys
by it) and lets a server find the one hash to check instead of trying every key; the secret is 256 random
bits. The store is a JSON file written atomically (temp file + fsync + rename) under an flock, readable
by its owner only.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import secrets
import string
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from modelfleet.errors import Conflict, InvalidInput, NotFound
from modelfleet.fileio import write_atomic
from modelfleet.security.audit import AuditLog
from modelfleet.security.scopes import parse_scopes

KEY_PREFIX = "mf_"
KEY_ID_LENGTH = 8
KEY_PATTERN = re.compile(r"^mf_([a-z0-9]{8})_([A-Za-z0-9_-]{43})$")
_ID_ALPHABET = string.ascii_lowercase + string.digits
# OWASP's argon2id minimum (19 MiB, 2 passes). The secrets are 256 random bits, so the KDF guards a stolen
# keys file, not weak passwords; servers cache verified keys, so this cost is paid once per key.
_HASHER = PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1)


def utc_now() -> datetime:
    return datetime.now(UTC)


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class ApiKeyRecord(BaseModel):
    """What the store keeps about a key. ``key_hash`` never leaves the store (see ``public()``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    key_id: str = Field(description="Public id, the 8 characters after mf_.")
    name: str = Field(description="What the key is for (e.g. ci, team-search).")
    scopes: list[str] = Field(description="Granted scopes: admin, read, infer:<model or glob>.")
    key_hash: str = Field(description="argon2id hash of the whole key (salted).")
    created_at: str = Field(description="When it was created (ISO 8601 UTC).")
    created_by: str = Field(description="Who created it.")
    expires_at: str | None = Field(default=None, description="When it stops working, if it expires.")
    revoked_at: str | None = Field(default=None, description="When it was revoked, if it was.")
    revoked_by: str | None = Field(default=None, description="Who revoked it.")
    revoke_reason: str | None = Field(default=None, description="Why it was revoked.")

    def status(self, now: datetime) -> Literal["active", "revoked", "expired"]:
        if self.revoked_at is not None:
            return "revoked"
        if (
            self.expires_at is not None
            and datetime.fromisoformat(self.expires_at.replace("Z", "+00:00")) <= now
        ):
            return "expired"
        return "active"

    def public(self, now: datetime | None = None) -> dict[str, object]:
        """Everything but the hash, plus the current status: safe to print and log."""
        data = self.model_dump(exclude={"key_hash"})
        data["status"] = self.status(now or utc_now())
        data["display"] = f"{KEY_PREFIX}{self.key_id}_…"
        return data


class KeysFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    format: Literal["modelfleet-keys"] = "modelfleet-keys"
    format_version: int = 1
    keys: list[ApiKeyRecord] = Field(default_factory=list)


@dataclass(frozen=True, slots=True)
class CreatedKey:
    key: str  # the only time the plaintext exists outside the caller's hands: show it once, store nowhere
    record: ApiKeyRecord


def split_key(key: str) -> str | None:
    """The key id of a well-formed key, else None."""
    match = KEY_PATTERN.match(key)
    return None if match is None else match[1]


def verify_key_hash(key_hash: str, key: str) -> bool:
    try:
        return _HASHER.verify(key_hash, key)
    except (VerificationError, InvalidHashError):
        return False


class KeyStore:
    """The keys file. Creating and revoking keys is audited here (the library, not the CLI), by default in
    `audit.jsonl` beside the keys file, so a library user's `create` leaves the same trail as the CLI's."""

    def __init__(self, path: Path, audit: AuditLog | None = None) -> None:
        self.path = Path(path)
        self._audit = audit

    @property
    def audit(self) -> AuditLog:
        if self._audit is None:  # made on first write: readers (servers) never open the audit log
            self._audit = AuditLog(self.path.parent / "audit.jsonl")
        return self._audit

    def file_signature(self) -> tuple[int, int, int] | None:
        """(inode, size, mtime_ns) of the file, or None if absent; changes on every save (atomic rename)."""
        try:
            info = os.stat(self.path)
        except FileNotFoundError:
            return None
        return info.st_ino, info.st_size, info.st_mtime_ns

    def load(self) -> list[ApiKeyRecord]:
        if not self.path.exists():
            return []
        try:
            return KeysFile.model_validate_json(self.path.read_bytes()).keys
        except ValidationError:
            raise InvalidInput(f"{self.path} is not a modelfleet keys file") from None

    def list_keys(self) -> list[ApiKeyRecord]:
        return self.load()

    def get(self, key_id: str) -> ApiKeyRecord:
        for record in self.load():
            if record.key_id == key_id:
                return record
        raise NotFound(f"no API key with id {key_id!r} in {self.path}")

    def create(
        self, name: str, scopes: Sequence[str], *, actor: str, expires_in_s: float | None = None
    ) -> CreatedKey:
        """Make a key with ``scopes``; the returned plaintext is never stored and cannot be shown again."""
        if not name.strip():
            raise InvalidInput("give the key a name that says what it is for")
        granted = [str(scope) for scope in parse_scopes(scopes)]
        if expires_in_s is not None and expires_in_s <= 0:
            raise InvalidInput(f"expiry must be in the future (got {expires_in_s} s)")
        now = utc_now()
        with self._locked() as records:
            taken = {record.key_id for record in records}
            key_id = _new_id(taken)
            key = f"{KEY_PREFIX}{key_id}_{secrets.token_urlsafe(32)}"
            record = ApiKeyRecord(
                key_id=key_id,
                name=name.strip(),
                scopes=granted,
                key_hash=_HASHER.hash(key),
                created_at=_iso(now),
                created_by=actor,
                expires_at=None if expires_in_s is None else _iso(now + timedelta(seconds=expires_in_s)),
            )
            records.append(record)
        self.audit.record(
            "keys.create",
            actor=actor,
            key_id=record.key_id,
            name=record.name,
            scopes=record.scopes,
            expires_at=record.expires_at,
        )
        return CreatedKey(key=key, record=record)

    def revoke(self, key_id: str, *, actor: str, reason: str = "") -> ApiKeyRecord:
        """Mark a key revoked (kept for the record; servers reject it within their reload interval)."""
        with self._locked() as records:
            for position, record in enumerate(records):
                if record.key_id != key_id:
                    continue
                if record.revoked_at is not None:
                    raise Conflict(f"API key {key_id} was already revoked at {record.revoked_at}")
                revoked = ApiKeyRecord.model_validate(
                    record.model_dump()
                    | {"revoked_at": _iso(utc_now()), "revoked_by": actor, "revoke_reason": reason or None}
                )
                records[position] = revoked
                break
            else:
                raise NotFound(f"no API key with id {key_id!r} in {self.path}")
        self.audit.record("keys.revoke", actor=actor, key_id=revoked.key_id, reason=reason)
        return revoked

    @contextmanager
    def _locked(self) -> Iterator[list[ApiKeyRecord]]:
        """Read-modify-write under an exclusive flock; saved only when the block succeeds."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock_fd = os.open(self.path.with_name(self.path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX)
            records = self.load()
            yield records
            self._save(records)
        finally:
            os.close(lock_fd)

    def _save(self, records: list[ApiKeyRecord]) -> None:
        data = (
            json.dumps(KeysFile(keys=records).model_dump(mode="json"), indent=2, sort_keys=True).encode()
            + b"\n"
        )
        write_atomic(self.path, data, mode=0o600)  # keys file: owner only


def _new_id(taken: set[str]) -> str:
    while True:
        key_id = "".join(secrets.choice(_ID_ALPHABET) for _ in range(KEY_ID_LENGTH))
        if key_id not in taken:
            return key_id
