"""The content-addressed blob store: stored once, atomic, verified on read, encrypted at rest when keyed."""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import pytest

from modelfleet.errors import IntegrityError, InvalidInput
from modelfleet.registry.blobs import BlobCipher, BlobStore


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _read_all(store: BlobStore, sha256: str) -> bytes:
    with store.open(sha256) as reader:
        return reader.read()


def _flip_byte(path: Path, offset: int) -> None:
    os.chmod(path, 0o644)
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def test_put_stores_bytes_once_under_their_hash(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    data = os.urandom(3 * 1024 * 1024 + 17)  # spans several copy chunks
    digest = _sha(data)
    assert store.put_bytes(data, digest) is True
    assert store.put_bytes(data, digest) is False  # already there, intact
    assert list(store.digests()) == [digest]
    assert _read_all(store, digest) == data
    assert store.temp_files() == []
    assert store.path_for(digest).stat().st_mode & 0o777 == 0o444


def test_put_refuses_bytes_that_do_not_match_the_recorded_hash(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    with pytest.raises(IntegrityError, match="hashes to"):
        store.put_bytes(b"actual bytes", _sha(b"what the manifest said"))
    assert list(store.digests()) == []
    assert store.temp_files() == []  # the temp file is removed on failure


def test_a_flipped_byte_is_caught_on_read_and_by_check(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    data = b"model weights " * 1000
    digest = _sha(data)
    store.put_bytes(data, digest)
    _flip_byte(store.path_for(digest), 100)
    assert "hashes to" in (store.check(digest) or "")
    with pytest.raises(IntegrityError):
        _read_all(store, digest)
    # Putting the same bytes again repairs the damaged blob.
    assert store.put_bytes(data, digest) is True
    assert store.check(digest) is None


def test_missing_blob_and_bad_names(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    assert store.check("a" * 64) == "blob is missing from the store"
    with pytest.raises(InvalidInput):
        store.path_for("../../etc/passwd")


def test_encrypted_blobs_hold_no_plaintext_and_round_trip(tmp_path: Path) -> None:
    key = os.urandom(32)
    store = BlobStore(tmp_path, BlobCipher(key))
    data = b"secret model weights that must not leak " * 5000
    digest = _sha(data)
    store.put_stream(io.BytesIO(data), digest)
    on_disk = store.path_for(digest).read_bytes()
    assert b"secret model weights" not in on_disk
    assert _read_all(store, digest) == data
    assert store.check(digest) is None


def test_encrypted_blob_with_wrong_key_or_tampering_fails_authentication(tmp_path: Path) -> None:
    data = os.urandom(200_000)
    digest = _sha(data)
    BlobStore(tmp_path, BlobCipher(os.urandom(32))).put_bytes(data, digest)
    wrong = BlobStore(tmp_path, BlobCipher(os.urandom(32)))
    assert "authentication" in (wrong.check(digest) or "")
    with pytest.raises(IntegrityError):
        _read_all(wrong, digest)


def test_encrypted_ciphertext_moved_under_another_name_does_not_decrypt(tmp_path: Path) -> None:
    key = os.urandom(32)
    store = BlobStore(tmp_path, BlobCipher(key))
    first, second = b"first blob" * 100, b"second blob" * 100
    store.put_bytes(first, _sha(first))
    store.put_bytes(second, _sha(second))
    target = store.path_for(_sha(second))
    os.chmod(target, 0o644)
    target.write_bytes(store.path_for(_sha(first)).read_bytes())
    assert "authentication" in (store.check(_sha(second)) or "")


def test_flipped_ciphertext_byte_is_caught(tmp_path: Path) -> None:
    store = BlobStore(tmp_path, BlobCipher(os.urandom(32)))
    data = os.urandom(50_000)
    digest = _sha(data)
    store.put_bytes(data, digest)
    _flip_byte(store.path_for(digest), 30_000)
    assert store.check(digest) is not None


def test_wrong_key_length_is_refused() -> None:
    with pytest.raises(InvalidInput, match="32 bytes"):
        BlobCipher(b"short")


def test_clean_temp_removes_leftovers_of_interrupted_writes(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    (store.tmp_dir / "0123456789abcdef.xyz.part").write_bytes(b"half")
    assert len(store.temp_files()) == 1
    assert store.clean_temp() == 1
    assert store.temp_files() == []
