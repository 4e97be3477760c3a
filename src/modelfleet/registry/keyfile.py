"""Reading the registry's encryption key (AES-256, base64 text or 32 raw bytes)."""

from __future__ import annotations

import base64
import binascii
from pathlib import Path

from modelfleet.errors import InvalidInput, NotFound
from modelfleet.registry.blobs import ENCRYPTION_KEY_BYTES


def decode_encryption_key(data: bytes, where: str) -> bytes:
    """A key from base64 text; `where` names its origin in the error."""
    try:
        key = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInput(
            f"{where} does not hold a base64 key (make one with `modelfleet registry gen-encryption-key`)"
        ) from None
    if len(key) != ENCRYPTION_KEY_BYTES:
        raise InvalidInput(
            f"{where} holds a {len(key)}-byte key; the registry needs {ENCRYPTION_KEY_BYTES} bytes"
        )
    return key


def read_encryption_key_file(key_file: Path) -> bytes:
    if not key_file.is_file():
        raise NotFound(f"encryption key file {key_file} does not exist")
    data = key_file.read_bytes()
    if len(data) == ENCRYPTION_KEY_BYTES:
        return data
    return decode_encryption_key(data.strip(), str(key_file))
