"""The Authenticator: 401 vs 403 without hints, a cheap hot path, revocation and expiry, audited failures."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from modelfleet.errors import Forbidden, Unauthorized
from modelfleet.security.audit import AuditLog
from modelfleet.security.auth import (
    INVALID_MESSAGE,
    Authenticator,
    Principal,
    authorize_off_loop,
    credentials_from_headers,
)
from modelfleet.security.keys import CreatedKey, KeyStore


class FakeClock:
    def __init__(self) -> None:
        self.now_s = 1000.0

    def __call__(self) -> float:
        return self.now_s


@pytest.fixture
def store(tmp_path: Path) -> KeyStore:
    return KeyStore(tmp_path / "keys.json")


@pytest.fixture
def infer_key(store: KeyStore) -> CreatedKey:
    return store.create("search", ["infer:bert-*", "read"], actor="ana")


def _denied(auth: Authenticator, credentials: str | None, scope: str) -> Unauthorized | Forbidden:
    with pytest.raises((Unauthorized, Forbidden)) as caught:
        auth.authorize(credentials, scope)
    assert isinstance(caught.value, Unauthorized | Forbidden)
    return caught.value


def test_valid_key_in_either_header_form(store: KeyStore, infer_key: CreatedKey) -> None:
    auth = Authenticator(store)
    principal = auth.authorize(f"Bearer {infer_key.key}", "infer:bert-base")
    assert principal.key_id == infer_key.record.key_id and principal.name == "search"
    assert auth.authorize(f"bearer   {infer_key.key} ", "read").key_id == principal.key_id
    assert auth.authorize(credentials_from_headers(None, infer_key.key), "infer:bert-large") == principal
    assert credentials_from_headers("Bearer a", "b") == "Bearer a"


def test_missing_key_is_401_and_wrong_scope_is_403_without_hints(
    store: KeyStore, infer_key: CreatedKey
) -> None:
    auth = Authenticator(store)
    missing = _denied(auth, None, "infer:bert-base")
    assert isinstance(missing, Unauthorized) and missing.http_status == 401
    assert _denied(auth, "", "read").http_status == 401
    forbidden = _denied(auth, f"Bearer {infer_key.key}", "infer:secret-model")
    assert isinstance(forbidden, Forbidden) and forbidden.http_status == 403
    assert "secret-model" not in forbidden.message and "bert" not in forbidden.message
    assert _denied(auth, f"Bearer {infer_key.key}", "admin").http_status == 403


def test_every_bad_key_gets_the_same_answer(store: KeyStore, infer_key: CreatedKey) -> None:
    auth = Authenticator(store)
    key = infer_key.key
    wrong_secret = key[:-4] + ("AAAA" if not key.endswith("AAAA") else "BBBB")
    unknown_id = "mf_00000000_" + key.split("_", 2)[2]
    for credentials in (wrong_secret, unknown_id, "garbage", "Bearer mf_short", "Basic dXNlcjpwYXNz"):
        error = _denied(auth, credentials, "read")
        assert isinstance(error, Unauthorized) and error.message == INVALID_MESSAGE


def test_hot_path_runs_the_kdf_once_per_key(store: KeyStore, infer_key: CreatedKey) -> None:
    auth = Authenticator(store)
    header = f"Bearer {infer_key.key}"
    auth.authorize(header, "infer:bert-base")
    calls = 20_000
    started = time.perf_counter()
    for _ in range(calls):
        auth.authorize(header, "infer:bert-base")
    per_call_us = (time.perf_counter() - started) / calls * 1e6
    assert auth.stats.kdf_runs == 1 and auth.stats.cache_hits == calls
    assert per_call_us < 200, f"{per_call_us:.1f} µs per authorisation"  # argon2 alone costs ~30,000 µs
    wrong = infer_key.key[:-1] + ("A" if not infer_key.key.endswith("A") else "B")
    for _ in range(5):
        _denied(auth, wrong, "read")
    assert auth.stats.kdf_runs == 2  # a repeated wrong key is remembered too


def test_revocation_and_new_keys_reach_a_running_authenticator(
    store: KeyStore, infer_key: CreatedKey
) -> None:
    clock = FakeClock()
    auth = Authenticator(store, reload_interval_s=1.0, clock=clock)
    header = f"Bearer {infer_key.key}"
    auth.authorize(header, "read")
    admin = store.create("ops", ["admin"], actor="ana")
    store.revoke(infer_key.record.key_id, actor="ana")
    auth.authorize(header, "read")  # within the reload interval the old view still holds
    clock.now_s += 1.5
    assert _denied(auth, header, "read").message == INVALID_MESSAGE
    assert auth.authorize(f"Bearer {admin.key}", "admin").name == "ops"


def test_expired_key_is_rejected(store: KeyStore) -> None:
    created = store.create("short", ["read"], actor="ana", expires_in_s=1.0)
    auth = Authenticator(store)
    auth.authorize(created.key, "read")
    assert created.record.expires_at is not None
    expires = datetime.fromisoformat(created.record.expires_at.replace("Z", "+00:00"))
    time.sleep(max(0.0, (expires - datetime.now(UTC)).total_seconds()) + 0.01)
    assert _denied(auth, created.key, "read").message == INVALID_MESSAGE


def test_failures_are_audited_without_secrets_and_rate_limited(
    tmp_path: Path, store: KeyStore, infer_key: CreatedKey
) -> None:
    clock = FakeClock()
    audit = AuditLog(tmp_path / "auth-audit.jsonl")  # the key store audits its writes in audit.jsonl
    auth = Authenticator(store, audit=audit, clock=clock, max_audit_failures_per_s=3)
    wrong = infer_key.key[:-2] + "zz"
    for _ in range(10):
        _denied(auth, f"Bearer {wrong}", "read")
    _denied(auth, f"Bearer {infer_key.key}", "infer:other")
    clock.now_s += 1.0
    _denied(auth, None, "read")
    text = audit.path.read_text()
    assert infer_key.key not in text and wrong not in text and infer_key.key.split("_", 2)[2][:20] not in text
    entries = [json.loads(line) for line in text.splitlines()]
    assert [e["event"] for e in entries] == ["auth.denied"] * 3 + ["auth.suppressed", "auth.denied"]
    assert entries[0]["reason"] == "wrong_secret" and entries[0]["key_id"] == infer_key.record.key_id
    assert entries[3]["count"] == 8
    assert entries[4]["reason"] == "missing" and entries[4]["http_status"] == 401
    assert auth.stats.denied == 12


def test_concurrent_callers_share_one_verification(store: KeyStore, infer_key: CreatedKey) -> None:
    auth = Authenticator(store)
    header = f"Bearer {infer_key.key}"
    errors: list[BaseException] = []

    def hammer() -> None:
        try:
            for _ in range(2000):
                auth.authorize(header, "infer:bert-x")
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # Threads that arrive before the first verification finishes may each run the KDF once; no more.
    assert errors == [] and 1 <= auth.stats.kdf_runs <= 4
    assert auth.stats.cache_hits + auth.stats.kdf_runs == 8000


def test_from_keys_file_builds_a_working_authenticator(
    tmp_path: Path, infer_key: CreatedKey, store: KeyStore
) -> None:
    auth = Authenticator.from_keys_file(store.path, audit_log=tmp_path / "a.jsonl")
    assert auth.authorize(infer_key.key, "read").key_id == infer_key.record.key_id
    _denied(auth, None, "read")
    assert (tmp_path / "a.jsonl").exists()


def test_authorize_off_loop_runs_a_new_keys_kdf_in_a_thread_and_a_known_key_inline(
    store: KeyStore, infer_key: CreatedKey
) -> None:
    auth = Authenticator(store)
    loop_thread = threading.get_ident()
    threads: list[int] = []
    authorize = auth.authorize

    def spy(credentials: str | None, scope: str) -> Principal:
        threads.append(threading.get_ident())
        return authorize(credentials, scope)

    auth.authorize = spy  # type: ignore[method-assign]
    credentials = f"Bearer {infer_key.key}"
    first = asyncio.run(authorize_off_loop(auth, credentials, "read"))
    again = asyncio.run(authorize_off_loop(auth, credentials, "read"))
    assert first == again and first.key_id == infer_key.record.key_id
    assert threads[0] != loop_thread and threads[1] == loop_thread
    with pytest.raises(Unauthorized):
        asyncio.run(authorize_off_loop(auth, None, "read"))
    with pytest.raises(Forbidden):
        asyncio.run(authorize_off_loop(auth, credentials, "admin"))
