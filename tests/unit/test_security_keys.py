"""The API key store: shown once, hashed at rest, revocable, safe under concurrent writers."""

from __future__ import annotations

import json
import stat
import threading
from pathlib import Path

import pytest

from modelfleet.errors import Conflict, InvalidInput, NotFound
from modelfleet.security.keys import KEY_PATTERN, KeyStore, split_key, verify_key_hash


def test_created_key_is_stored_only_as_a_salted_hash(tmp_path: Path) -> None:
    store = KeyStore(tmp_path / "keys.json")
    created = store.create("ci", ["infer:iris*", "read"], actor="ana")
    assert KEY_PATTERN.match(created.key)
    assert split_key(created.key) == created.record.key_id
    text = store.path.read_text()
    secret = created.key.split("_", 2)[2]
    assert created.key not in text and secret not in text
    assert created.record.key_hash.startswith("$argon2id$")
    assert verify_key_hash(created.record.key_hash, created.key)
    assert not verify_key_hash(
        created.record.key_hash, created.key[:-1] + ("A" if created.key[-1] != "A" else "B")
    )
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    public = created.record.public()
    assert "key_hash" not in public and public["status"] == "active"
    assert public["display"] == f"mf_{created.record.key_id}_…"


def test_same_key_material_gets_different_salts(tmp_path: Path) -> None:
    store = KeyStore(tmp_path / "keys.json")
    first = store.create("a", ["read"], actor="x")
    second = store.create("b", ["read"], actor="x")
    assert first.key != second.key and first.record.key_id != second.record.key_id
    assert first.record.key_hash.split("$")[4] != second.record.key_hash.split("$")[4]  # salts


def test_list_get_and_revoke(tmp_path: Path) -> None:
    store = KeyStore(tmp_path / "keys.json")
    keep = store.create("keep", ["read"], actor="a")
    drop = store.create("drop", ["admin"], actor="a", expires_in_s=3600)
    assert [r.name for r in store.list_keys()] == ["keep", "drop"]
    assert store.get(drop.record.key_id).expires_at is not None
    revoked = store.revoke(drop.record.key_id, actor="b", reason="leaked in a log")
    assert revoked.revoked_by == "b" and revoked.revoke_reason == "leaked in a log"
    assert store.get(drop.record.key_id).public()["status"] == "revoked"
    assert store.get(keep.record.key_id).revoked_at is None
    with pytest.raises(Conflict, match="already revoked"):
        store.revoke(drop.record.key_id, actor="b")
    with pytest.raises(NotFound):
        store.revoke("zzzzzzzz", actor="b")


def test_bad_input_is_refused(tmp_path: Path) -> None:
    store = KeyStore(tmp_path / "keys.json")
    with pytest.raises(InvalidInput, match="scope"):
        store.create("x", ["write"], actor="a")
    with pytest.raises(InvalidInput, match="at least one scope"):
        store.create("x", [], actor="a")
    with pytest.raises(InvalidInput, match="name"):
        store.create(" ", ["read"], actor="a")
    with pytest.raises(InvalidInput, match="future"):
        store.create("x", ["read"], actor="a", expires_in_s=-1)
    assert not store.path.exists()  # nothing was written
    store.path.write_text(json.dumps({"something": "else"}))
    with pytest.raises(InvalidInput, match="not a modelfleet keys file"):
        store.list_keys()


def test_concurrent_creates_all_persist(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    errors: list[BaseException] = []

    def create(index: int) -> None:
        try:
            KeyStore(path).create(f"k{index}", ["read"], actor="a")
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=create, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert sorted(r.name for r in KeyStore(path).list_keys()) == [f"k{i}" for i in range(6)]


def test_the_library_audits_create_and_revoke_without_the_cli(tmp_path: Path) -> None:
    store = KeyStore(tmp_path / "keys.json")
    created = store.create("ci", ["read"], actor="ana")
    store.revoke(created.record.key_id, actor="bo", reason="leaked")
    with pytest.raises(NotFound):
        store.revoke("nosuchid", actor="bo")
    entries = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    assert [(e["event"], e["actor"], e["key_id"]) for e in entries] == [
        ("keys.create", "ana", created.record.key_id),
        ("keys.revoke", "bo", created.record.key_id),
    ]
    assert entries[1]["reason"] == "leaked" and created.key not in (tmp_path / "audit.jsonl").read_text()
