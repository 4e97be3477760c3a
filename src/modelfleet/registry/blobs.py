"""Content-addressed blob store: every file's bytes live once under their sha256.

Writes are atomic (temp file in the store + fsync + rename + directory fsync), so a crash leaves either
a complete blob or a temp file that `clean_temp` removes, never a half-written blob under a real name.

With a key, blobs are encrypted at rest with AES-256-GCM: ``MAGIC || nonce(12) || ciphertext || tag(16)``.
The blob's plaintext sha256 is the authenticated data, so a ciphertext copied under another name does
not decrypt. Names stay plaintext hashes (they reveal which blobs are equal, not what they hold).
"""

from __future__ import annotations

import hashlib
import hmac
import io
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO, Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import (
    AEADDecryptionContext,
    AEADEncryptionContext,
    Cipher,
    algorithms,
    modes,
)

from modelfleet.errors import IntegrityError, InvalidInput
from modelfleet.fileio import fsync_dir

CHUNK_BYTES = 1 << 20
ENCRYPTION_KEY_BYTES = 32
_MAGIC = b"MFAESGCM1\n"
_NONCE_BYTES = 12
_TAG_BYTES = 16
_HEADER_BYTES = len(_MAGIC) + _NONCE_BYTES
_TEMP_SUFFIX = ".part"
_HEX = frozenset("0123456789abcdef")


def is_sha256_hex(text: str) -> bool:
    return len(text) == 64 and set(text) <= _HEX


class _Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


class BlobCipher:
    """AES-256-GCM for blobs at rest."""

    def __init__(self, key: bytes) -> None:
        if len(key) != ENCRYPTION_KEY_BYTES:
            raise InvalidInput(
                f"the registry encryption key must be {ENCRYPTION_KEY_BYTES} bytes, got {len(key)}"
            )
        self._key = key

    def key_check(self) -> str:
        """A value stored with the registry that tells a wrong key from the right one and reveals nothing."""
        return hmac.new(self._key, b"modelfleet registry key check v1", hashlib.sha256).hexdigest()

    def encryptor(self, sha256: str) -> tuple[bytes, _Encryptor]:
        nonce = os.urandom(_NONCE_BYTES)
        context = Cipher(algorithms.AES(self._key), modes.GCM(nonce)).encryptor()
        context.authenticate_additional_data(sha256.encode())
        return _MAGIC + nonce, _Encryptor(context)

    def decryptor(self, header: bytes, tag: bytes, sha256: str) -> _Decryptor:
        if len(header) != _HEADER_BYTES or not header.startswith(_MAGIC):
            raise IntegrityError("not an encrypted modelfleet blob (bad header)")
        nonce = header[len(_MAGIC) :]
        context = Cipher(algorithms.AES(self._key), modes.GCM(nonce, tag)).decryptor()
        context.authenticate_additional_data(sha256.encode())
        return _Decryptor(context)


class _Encryptor:
    def __init__(self, context: AEADEncryptionContext) -> None:
        self._context = context

    def update(self, data: bytes) -> bytes:
        return self._context.update(data)

    def finish(self) -> bytes:
        """Final bytes plus the 16-byte tag."""
        return self._context.finalize() + self._context.tag


class _Decryptor:
    def __init__(self, context: AEADDecryptionContext) -> None:
        self._context = context

    def update(self, data: bytes) -> bytes:
        return self._context.update(data)

    def finish(self) -> bytes:
        try:
            tail = self._context.finalize()
        except InvalidTag:
            raise IntegrityError(
                "encrypted blob fails authentication (tampered, or a different key)"
            ) from None
        return tail


class BlobReader:
    """Reads a blob's plaintext and checks its sha256 (and GCM tag) the moment the last byte is read.

    Consumers that read exactly ``size_bytes`` (tarfile does) still get the check; a mismatch raises
    ``IntegrityError`` from ``read`` so nothing downstream can mistake corrupt bytes for good ones.
    """

    def __init__(self, handle: BinaryIO, sha256: str, cipher: BlobCipher | None) -> None:
        self._handle = handle
        self._sha256 = sha256
        self._digest = hashlib.sha256()
        total = os.fstat(handle.fileno()).st_size
        self._decryptor: _Decryptor | None = None
        if cipher is None:
            self._remaining = total
        else:
            if total < _HEADER_BYTES + _TAG_BYTES:
                raise IntegrityError("encrypted blob is truncated")
            handle.seek(total - _TAG_BYTES)
            tag = handle.read(_TAG_BYTES)
            handle.seek(0)
            header = handle.read(_HEADER_BYTES)
            self._decryptor = cipher.decryptor(header, tag, sha256)
            self._remaining = total - _HEADER_BYTES - _TAG_BYTES
        self.size_bytes = self._remaining
        self._done = False

    def read(self, size: int = -1) -> bytes:
        if self._done:
            return b""
        want = self._remaining if size < 0 else min(size, self._remaining)
        data = self._handle.read(want)
        if len(data) != want:
            raise IntegrityError("blob is truncated")
        self._remaining -= len(data)
        if self._decryptor is not None:
            data = self._decryptor.update(data)
            if self._remaining == 0:
                data += self._decryptor.finish()
        self._digest.update(data)
        if self._remaining == 0:
            self._done = True
            actual = self._digest.hexdigest()
            if actual != self._sha256:
                raise IntegrityError(f"content hashes to {actual[:12]}…, not {self._sha256[:12]}…")
        return data

    def close(self) -> None:
        self._handle.close()

    def __enter__(self) -> BlobReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class BlobStore:
    """``root/blobs/ab/abcdef…`` (sha256 of the plaintext) with temp files in ``root/tmp``."""

    def __init__(self, root: Path, cipher: BlobCipher | None = None) -> None:
        self.blob_dir = root / "blobs"
        self.tmp_dir = root / "tmp"
        self._cipher = cipher
        self.blob_dir.mkdir(parents=True, exist_ok=True)
        self.tmp_dir.mkdir(parents=True, exist_ok=True)

    @property
    def encrypted(self) -> bool:
        return self._cipher is not None

    def path_for(self, sha256: str) -> Path:
        if not is_sha256_hex(sha256):
            raise InvalidInput(f"{sha256!r} is not a sha256 hex digest")
        return self.blob_dir / sha256[:2] / sha256

    def has(self, sha256: str) -> bool:
        return self.path_for(sha256).is_file()

    def open(self, sha256: str) -> BlobReader:
        """A reader of the blob's plaintext; raises IntegrityError when missing or, on read, when corrupt."""
        path = self.path_for(sha256)
        try:
            handle = path.open("rb")
        except FileNotFoundError:
            raise IntegrityError("blob is missing from the store") from None
        try:
            return BlobReader(handle, sha256, self._cipher)
        except BaseException:
            handle.close()
            raise

    def check(self, sha256: str) -> str | None:
        """None when the blob is present and intact, else what is wrong. Reads the whole blob."""
        try:
            with self.open(sha256) as reader:
                while reader.read(CHUNK_BYTES):
                    pass
        except IntegrityError as exc:
            return exc.message
        return None

    def put_file(self, source: Path, sha256: str) -> bool:
        """Store ``source`` under ``sha256``; True when bytes were written, False when an intact copy was there."""
        with source.open("rb") as handle:
            return self.put_stream(handle, sha256)

    def put_bytes(self, data: bytes, sha256: str) -> bool:
        return self.put_stream(io.BytesIO(data), sha256)

    def put_stream(self, reader: _Readable, sha256: str) -> bool:
        """Copy ``reader`` into the store, refusing it (IntegrityError) unless it hashes to ``sha256``.

        An existing intact blob is kept (stored once); an existing corrupt one is replaced, which repairs it.
        """
        final = self.path_for(sha256)
        if final.is_file() and self.check(sha256) is None:
            return False
        fd, temp_name = tempfile.mkstemp(dir=self.tmp_dir, prefix=f"{sha256[:16]}.", suffix=_TEMP_SUFFIX)
        temp = Path(temp_name)
        try:
            digest = hashlib.sha256()
            with os.fdopen(fd, "wb") as out:
                encryptor = None
                if self._cipher is not None:
                    header, encryptor = self._cipher.encryptor(sha256)
                    out.write(header)
                while chunk := reader.read(CHUNK_BYTES):
                    digest.update(chunk)
                    out.write(encryptor.update(chunk) if encryptor is not None else chunk)
                if encryptor is not None:
                    out.write(encryptor.finish())
                out.flush()
                os.fsync(out.fileno())
            actual = digest.hexdigest()
            if actual != sha256:
                raise IntegrityError(f"content hashes to {actual[:12]}…, not {sha256[:12]}… as recorded")
            # Read-only: a blob never changes after it is written.
            os.chmod(temp, 0o444)
            new_dir = not final.parent.is_dir()
            final.parent.mkdir(exist_ok=True)
            if new_dir:
                fsync_dir(self.blob_dir)
            os.replace(temp, final)
            fsync_dir(final.parent)
        except BaseException:
            temp.unlink(missing_ok=True)
            raise
        return True

    def remove(self, sha256: str) -> int:
        """Delete a blob; returns the bytes freed on disk."""
        path = self.path_for(sha256)
        try:
            size = path.stat().st_size
            path.unlink()
        except FileNotFoundError:
            return 0
        fsync_dir(path.parent)
        return size

    def disk_size(self, sha256: str) -> int:
        try:
            return self.path_for(sha256).stat().st_size
        except FileNotFoundError:
            return 0

    def digests(self) -> Iterator[str]:
        for shard in sorted(self.blob_dir.iterdir()):
            if shard.is_dir():
                for path in sorted(shard.iterdir()):
                    if is_sha256_hex(path.name) and path.name.startswith(shard.name):
                        yield path.name

    def temp_files(self) -> list[Path]:
        return sorted(p for p in self.tmp_dir.iterdir() if p.is_file())

    def clean_temp(self) -> int:
        """Remove leftovers of interrupted writes. Only call while no writer runs (the registry's lock)."""
        removed = 0
        for path in self.temp_files():
            path.unlink(missing_ok=True)
            removed += 1
        return removed
