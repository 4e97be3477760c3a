"""Ed25519 signing of registry versions (the `cryptography` package).

A signature covers a canonical statement of the version: its name, number, manifest hash and the sha256
of every file. Trust comes only from the public keys a caller passes in (e.g. from the serve spec),
never from the key stored next to the signature.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from modelfleet.errors import Conflict, IntegrityError, InvalidInput, NotFound
from modelfleet.registry.models import ModelVersion, SignatureRecord

_CONTEXT = b"modelfleet-version-signature-v1\n"


def signing_payload(name: str, version: int, manifest_sha256: str, files: dict[str, str]) -> bytes:
    statement = {
        "files": dict(sorted(files.items())),
        "manifest_sha256": manifest_sha256,
        "name": name,
        "version": version,
    }
    return _CONTEXT + json.dumps(statement, sort_keys=True, separators=(",", ":")).encode()


def public_key_bytes(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id(key: Ed25519PublicKey) -> str:
    return hashlib.sha256(public_key_bytes(key)).hexdigest()[:16]


def public_key_from_b64(text: str) -> Ed25519PublicKey:
    try:
        return Ed25519PublicKey.from_public_bytes(base64.b64decode(text, validate=True))
    except ValueError:
        raise InvalidInput("not a base64 raw Ed25519 public key") from None


def sign(key: Ed25519PrivateKey, payload: bytes) -> bytes:
    return key.sign(payload)


def verify(key: Ed25519PublicKey, payload: bytes, signature: bytes) -> bool:
    try:
        key.verify(signature, payload)
    except InvalidSignature:
        return False
    return True


def generate_signing_key(private_path: Path, public_path: Path) -> str:
    """Write a new Ed25519 key pair as PEM files (private one readable by the owner only); returns its id."""
    for path in (private_path, public_path):
        if path.exists():
            raise Conflict(f"{path} already exists; refusing to overwrite a key")
    private = Ed25519PrivateKey.generate()
    private_pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public_pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    private_path.parent.mkdir(parents=True, exist_ok=True)
    public_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(private_pem)
    public_path.write_bytes(public_pem)
    return key_id(private.public_key())


def _read_pem(path: Path, what: str) -> bytes:
    if not path.is_file():
        raise NotFound(f"{what} file {path} does not exist")
    return path.read_bytes()


def load_private_key(path: Path) -> Ed25519PrivateKey:
    data = _read_pem(path, "signing key")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        raise InvalidInput(f"{path} is not an unencrypted PEM private key") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise InvalidInput(f"{path} is a {type(key).__name__}, not an Ed25519 private key")
    return key


def load_public_key(path: Path) -> Ed25519PublicKey:
    data = _read_pem(path, "public key")
    try:
        key = serialization.load_pem_public_key(data)
    except ValueError:
        raise InvalidInput(f"{path} is not a PEM public key") from None
    if not isinstance(key, Ed25519PublicKey):
        raise InvalidInput(f"{path} is a {type(key).__name__}, not an Ed25519 public key")
    return key


def version_payload(version: ModelVersion) -> bytes:
    return signing_payload(version.name, version.version, version.manifest_sha256, version.file_hashes())


def sign_version(version: ModelVersion, key: Ed25519PrivateKey, actor: str, at: str) -> SignatureRecord:
    """A signature record of ``version`` (name, number, file hashes) by ``key``."""
    public = key.public_key()
    return SignatureRecord(
        key_id=key_id(public),
        public_key_b64=base64.b64encode(public_key_bytes(public)).decode(),
        signature_b64=base64.b64encode(sign(key, version_payload(version))).decode(),
        signed_at=at,
        actor=actor,
    )


def trusted_signature(version: ModelVersion, trusted_keys: Sequence[Ed25519PublicKey]) -> SignatureRecord:
    """The recorded signature made by one of ``trusted_keys``; IntegrityError when there is none."""
    payload = version_payload(version)
    trusted = {key_id(key): key for key in trusted_keys}
    if not trusted:
        raise IntegrityError(
            f"{version.ref}: a signature is required but no trusted public key is configured"
        )
    for record in version.signatures:
        key = trusted.get(record.key_id)
        if key is not None and verify(key, payload, base64.b64decode(record.signature_b64)):
            return record
    held = ", ".join(s.key_id for s in version.signatures) or "none"
    raise IntegrityError(
        f"{version.ref}: no valid signature by a trusted key (trusted {', '.join(sorted(trusted))}; signed by {held})"
    )


def mismatched_signature(version: ModelVersion) -> str | None:
    """A problem line for the first recorded signature that does not match the version's files."""
    payload = version_payload(version)
    for record in version.signatures:
        key = public_key_from_b64(record.public_key_b64)
        if not verify(key, payload, base64.b64decode(record.signature_b64)):
            return f"{version.ref}: signature by key {record.key_id} does not match the version's files"
    return None
