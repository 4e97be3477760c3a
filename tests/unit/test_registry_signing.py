"""Ed25519 signing helpers: key files, payload canonical form, verification."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from modelfleet.errors import Conflict, InvalidInput, NotFound
from modelfleet.registry import signing


def test_generated_key_pair_signs_and_verifies(tmp_path: Path) -> None:
    key_id = signing.generate_signing_key(tmp_path / "k.pem", tmp_path / "k.pub")
    private = signing.load_private_key(tmp_path / "k.pem")
    public = signing.load_public_key(tmp_path / "k.pub")
    assert signing.key_id(public) == key_id
    assert stat.S_IMODE((tmp_path / "k.pem").stat().st_mode) == 0o600
    payload = signing.signing_payload("m", 1, "a" * 64, {"model.onnx": "b" * 64, "manifest.json": "a" * 64})
    signature = signing.sign(private, payload)
    assert signing.verify(public, payload, signature)
    changed = signing.signing_payload("m", 1, "a" * 64, {"model.onnx": "c" * 64, "manifest.json": "a" * 64})
    assert not signing.verify(public, changed, signature)
    assert not signing.verify(public, signing.signing_payload("m", 2, "a" * 64, {}), signature)


def test_payload_does_not_depend_on_file_order() -> None:
    one = signing.signing_payload("m", 1, "x", {"a": "1", "b": "2"})
    two = signing.signing_payload("m", 1, "x", {"b": "2", "a": "1"})
    assert one == two


def test_key_files_are_never_overwritten_and_bad_files_are_explained(tmp_path: Path) -> None:
    signing.generate_signing_key(tmp_path / "k.pem", tmp_path / "k.pub")
    with pytest.raises(Conflict):
        signing.generate_signing_key(tmp_path / "k.pem", tmp_path / "other.pub")
    with pytest.raises(NotFound):
        signing.load_public_key(tmp_path / "missing.pub")
    (tmp_path / "junk.pem").write_text("not a key")
    with pytest.raises(InvalidInput):
        signing.load_private_key(tmp_path / "junk.pem")
    with pytest.raises(InvalidInput, match=r"not an Ed25519 private key|not an unencrypted PEM"):
        signing.load_private_key(tmp_path / "k.pub")
