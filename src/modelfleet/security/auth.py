"""Request authorisation: credentials + required scope → Principal, or Unauthorized (401) / Forbidden (403).

Hot path: a key that verified once is remembered (by id, as the sha256 of the whole key), so later
requests cost a sha256 and a constant-time compare instead of an argon2 run. Each fresh key pays the KDF
once (tens of milliseconds of CPU); a repeated wrong key is remembered too, so retry storms stay cheap.
The key file is re-read when it changes (checked at most every ``reload_interval_s``), so a revocation
reaches a running server within that interval.

Error messages never say which part failed or which models exist: every bad key is "invalid API key",
every scope miss is "not allowed".
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import hmac
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol, TypeVar

from modelfleet.errors import Forbidden, InvalidInput, Unauthorized
from modelfleet.security.audit import AuditLog
from modelfleet.security.keys import ApiKeyRecord, KeyStore, split_key, verify_key_hash
from modelfleet.security.scopes import Scope, allows, parse_scopes, required_scope

MISSING_MESSAGE = "missing API key: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'"
INVALID_MESSAGE = "invalid API key"
FORBIDDEN_MESSAGE = "this API key is not allowed to do that"
# The challenge every 401 carries (RFC 9110 §11.6.1): how to authenticate, never why the key failed.
WWW_AUTHENTICATE = 'Bearer realm="modelfleet"'
K = TypeVar("K")
V = TypeVar("V")


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the key's public id and name, and what it may do."""

    key_id: str
    name: str
    scopes: tuple[Scope, ...]


@dataclass(slots=True)
class AuthStats:
    """Counters a server can export as metrics."""

    cache_hits: int = 0
    kdf_runs: int = 0
    denied: int = 0
    reloads: int = 0
    audit_suppressed: int = field(default=0)


def credentials_from_headers(authorization: str | None, x_api_key: str | None) -> str | None:
    """Pick the credential a request carries: the Authorization header, else X-API-Key."""
    return authorization if authorization else x_api_key


class Authorizer(Protocol):
    """Checks a request's credentials for a scope such as `infer:<model>`, `read` or `admin` (an Authenticator).

    ``client`` is the caller's address (``host:port``); it goes to the audit log with a refusal.
    """

    def authorize(self, credentials: str | None, scope: str, *, client: str | None = None) -> Principal: ...

    def is_cheap(self, credentials: str | None) -> bool: ...


async def authorize_off_loop(
    authorizer: Authorizer, credentials: str | None, scope: str, client: str | None = None
) -> Principal:
    """``authorizer.authorize`` for an async server (the model server's routes, the fleet router).

    Answered inline when the verdict is in memory; a key not seen before costs a KDF run (tens of
    milliseconds), which runs in a worker thread so it never blocks the event loop. Raises Unauthorized
    (401) or Forbidden (403) like ``authorize``.
    """
    # `client` only when known, so an authorizer written before it existed keeps working.
    check = authorizer.authorize if client is None else functools.partial(authorizer.authorize, client=client)
    if authorizer.is_cheap(credentials):
        return check(credentials, scope)
    return await asyncio.to_thread(check, credentials, scope)


class Authenticator:
    def __init__(
        self,
        store: KeyStore,
        *,
        audit: AuditLog | None = None,
        cache_size: int = 4096,
        reload_interval_s: float = 1.0,
        max_audit_failures_per_s: int = 50,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if cache_size < 1:
            raise InvalidInput("cache_size must be at least 1")
        self._store = store
        self._audit = audit
        self._cache_size = cache_size
        self._reload_interval_s = reload_interval_s
        self._max_audit_per_s = max_audit_failures_per_s
        self._clock = clock
        self._lock = threading.Lock()
        self._records: dict[str, ApiKeyRecord] = {}
        self._principals: dict[str, Principal] = {}
        self._verified: OrderedDict[str, bytes] = OrderedDict()  # key id → sha256(key) of a verified key
        self._rejected: OrderedDict[bytes, None] = OrderedDict()  # sha256(key) of keys that failed the KDF
        self._file_signature: tuple[int, int, int] | None = None
        self._generation = 0
        self._next_check_s = float("-inf")
        self._audit_window_s = 0
        self._audit_in_window = 0
        self.stats = AuthStats()
        self._reload(force=True)

    @classmethod
    def from_keys_file(
        cls, keys_file: Path, *, audit_log: Path | None = None, audit: AuditLog | None = None
    ) -> Authenticator:
        """What a server builds from its spec's ``auth: {enabled, keys_file}`` and its audit log (an
        ``AuditLog``, or a path to open one at)."""
        if audit is None and audit_log is not None:
            audit = AuditLog(audit_log)
        return cls(KeyStore(keys_file), audit=audit)

    def authorize(self, credentials: str | None, scope: str, *, client: str | None = None) -> Principal:
        """``credentials`` is the Authorization value (``Bearer <key>``) or the X-API-Key value.

        ``scope`` is what the route needs: ``infer:<model>``, ``read`` or ``admin``. ``client`` (an address)
        only goes to the audit log.
        """
        needed = required_scope(scope)
        with self._lock:
            self._reload()
            key = _extract_key(credentials)
            if key is None:
                raise self._deny(Unauthorized(MISSING_MESSAGE), "missing", None, scope, client)
            key_id = split_key(key)
            record = self._records.get(key_id) if key_id is not None else None
            if record is None or key_id is None:
                raise self._deny(Unauthorized(INVALID_MESSAGE), "unknown", key_id, scope, client)
            status = record.status(datetime.now(UTC))
            if status != "active":
                raise self._deny(Unauthorized(INVALID_MESSAGE), status, key_id, scope, client)
            digest = hashlib.sha256(key.encode()).digest()
            verdict = self._remembered(key_id, digest)
            generation = self._generation
            if verdict is None:
                self.stats.kdf_runs += 1
        if verdict is None:
            # The KDF runs outside the lock so one new key does not stall every other request.
            verdict = verify_key_hash(record.key_hash, key)
            with self._lock:
                if generation == self._generation:  # not across a reload (it may have revoked the key)
                    if verdict:
                        _bounded_put(self._verified, key_id, digest, self._cache_size)
                    else:
                        _bounded_put(self._rejected, digest, None, self._cache_size)
        with self._lock:
            if not verdict:
                raise self._deny(Unauthorized(INVALID_MESSAGE), "wrong_secret", key_id, scope, client)
            principal = self._principals.get(key_id) or Principal(
                key_id, record.name, parse_scopes(record.scopes)
            )
            if not allows(principal.scopes, needed):
                raise self._deny(Forbidden(FORBIDDEN_MESSAGE), "scope", key_id, scope, client)
            return principal

    def is_cheap(self, credentials: str | None) -> bool:
        """True when `authorize` will not run the KDF for these credentials (answered from memory).

        An async server calls `authorize` inline when this is True and in a worker thread otherwise, so a
        new or forged key never blocks the event loop for the tens of milliseconds argon2 takes.
        """
        key = _extract_key(credentials)
        if key is None:
            return True
        key_id = split_key(key)
        with self._lock:
            if key_id is None or key_id not in self._records:
                return True
            digest = hashlib.sha256(key.encode()).digest()
            cached = self._verified.get(key_id)
            return (cached is not None and hmac.compare_digest(cached, digest)) or digest in self._rejected

    def _remembered(self, key_id: str, digest: bytes) -> bool | None:
        """True/False when this exact key was verified/rejected before; None when the KDF must decide."""
        cached = self._verified.get(key_id)
        if cached is not None and hmac.compare_digest(cached, digest):
            self._verified.move_to_end(key_id)
            self.stats.cache_hits += 1
            return True
        if digest in self._rejected:
            self._rejected.move_to_end(digest)
            return False
        return None

    def _reload(self, force: bool = False) -> None:
        now = self._clock()
        if not force and now < self._next_check_s:
            return
        self._next_check_s = now + self._reload_interval_s
        signature = self._store.file_signature()
        if not force and signature == self._file_signature:
            return
        records = self._store.load()
        self._file_signature = signature
        self._records = {record.key_id: record for record in records}
        self._principals = {
            record.key_id: Principal(record.key_id, record.name, parse_scopes(record.scopes))
            for record in records
        }
        # A changed file may carry a revocation or a re-issued id: forget every verification.
        self._verified.clear()
        self._rejected.clear()
        self._generation += 1
        self.stats.reloads += 1

    def _deny(
        self, error: Unauthorized | Forbidden, reason: str, key_id: str | None, scope: str, client: str | None
    ) -> Unauthorized | Forbidden:
        self.stats.denied += 1
        if self._audit is not None:
            window = int(self._clock())
            if window != self._audit_window_s:
                if self.stats.audit_suppressed:
                    self._audit.record("auth.suppressed", count=self.stats.audit_suppressed)
                    self.stats.audit_suppressed = 0
                self._audit_window_s, self._audit_in_window = window, 0
            if self._audit_in_window < self._max_audit_per_s:
                self._audit_in_window += 1
                self._audit.record(
                    "auth.denied",
                    reason=reason,
                    key_id=key_id,
                    scope=scope,
                    client=client,
                    http_status=error.http_status,
                )
            else:
                self.stats.audit_suppressed += 1
        return error


def _extract_key(credentials: str | None) -> str | None:
    if credentials is None:
        return None
    value = credentials.strip()
    if value[:7].lower() == "bearer ":
        value = value[7:].strip()
    return value or None


def _bounded_put(cache: OrderedDict[K, V], key: K, value: V, size: int) -> None:
    cache[key] = value
    cache.move_to_end(key)
    while len(cache) > size:
        cache.popitem(last=False)
