"""Self-describing bundles: a tar file with ``modelfleet-bundle.json`` first, then ``blobs/<sha256>``.

The index names every version (with lineage, signatures, file hashes) and, for a model or the whole
registry, its aliases and alias history. Blobs are plaintext (bundles move models between registries,
each with its own key); every blob is hashed on the way out and on the way in, so a bundle can neither
carry nor deliver corrupt bytes. Members are never extracted by name, so a hostile bundle cannot write
outside the blob store.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import sqlite3
import tarfile
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from modelfleet import interrupt
from modelfleet.errors import Conflict, IntegrityError, InvalidInput, NotFound, StorageError
from modelfleet.fileio import fsync_dir
from modelfleet.manifest import MANIFEST_FILE
from modelfleet.registry import index
from modelfleet.registry.aliases import check_alias_name
from modelfleet.registry.blobs import BlobStore, is_sha256_hex
from modelfleet.registry.checkout import check_relative_path
from modelfleet.registry.models import AliasEvent, ExportReport, ExportScope, ImportReport, ModelVersion
from modelfleet.registry.recording import storage_error
from modelfleet.types import ModelRef, Progress

BUNDLE_INDEX_NAME = "modelfleet-bundle.json"
BUNDLE_FORMAT = "modelfleet-bundle"
BUNDLE_FORMAT_VERSION = 1
_BLOB_MEMBER = re.compile(r"^blobs/([0-9a-f]{64})$")
# The index is read into memory whole; this bounds what a hostile bundle can make it allocate.
MAX_INDEX_BYTES = 256 << 20


class AliasPointer(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(description="Model name.")
    alias: str = Field(description="Alias name.")
    version: int = Field(description="Version it points at.")


class BundleIndex(BaseModel):
    """The bundle's table of contents; enough to restore the versions without the source registry."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    format: Literal["modelfleet-bundle"] = Field(description="Always modelfleet-bundle.")
    format_version: int = Field(description="Bundle format version; this code reads 1.")
    created_at: str = Field(description="When the bundle was written (ISO 8601 UTC).")
    scope: ExportScope = Field(description="One version, one model with its history, or the whole registry.")
    source_registry_id: str = Field(description="store_id of the registry it came from.")
    versions: list[ModelVersion] = Field(description="Every version in the bundle.")
    aliases: list[AliasPointer] = Field(default_factory=list, description="Aliases to restore.")
    alias_events: list[AliasEvent] = Field(default_factory=list, description="Alias history to restore.")

    def check(self) -> None:
        if self.format_version != BUNDLE_FORMAT_VERSION:
            raise InvalidInput(
                f"bundle format version {self.format_version} is not supported (this modelfleet reads {BUNDLE_FORMAT_VERSION})"
            )
        for version in self.versions:
            paths = {entry.path for entry in version.files}
            for entry in version.files:
                check_relative_path(entry.path)
                if not is_sha256_hex(entry.sha256):
                    raise InvalidInput(f"bundle: {version.ref}/{entry.path} has no valid sha256")
            if MANIFEST_FILE not in paths or version.file_hashes()[MANIFEST_FILE] != version.manifest_sha256:
                raise IntegrityError(f"bundle: {version.ref} does not carry the manifest its record names")


def bundle_index(
    conn: sqlite3.Connection, versions: list[ModelVersion], ref: ModelRef | None, store_id: str, now: str
) -> BundleIndex:
    """The index of a bundle of ``versions`` (chosen by ``ref``; None: everything), with aliases and history
    unless it holds a single version."""
    scope: ExportScope = (
        "all" if ref is None else "model" if ref.version is None and ref.alias is None else "version"
    )
    aliases: list[AliasPointer] = []
    events: list[AliasEvent] = []
    if scope != "version":
        for name in sorted({v.name for v in versions}):
            aliases += [
                AliasPointer(name=name, alias=a, version=k) for a, k in index.aliases_of(conn, name).items()
            ]
            events += index.events(conn, name)
    return BundleIndex(
        format="modelfleet-bundle",
        format_version=BUNDLE_FORMAT_VERSION,
        created_at=now,
        scope=scope,
        source_registry_id=store_id,
        versions=versions,
        aliases=aliases,
        alias_events=events,
    )


def write_bundle(
    out: Path, index: BundleIndex, blobs: BlobStore, progress: Progress | None = None
) -> ExportReport:
    """Write ``index`` and every blob it needs to ``out`` atomically (``.tar``, or gzip for ``.tar.gz``/``.tgz``)."""
    if out.exists():
        raise Conflict(f"{out} already exists; refusing to overwrite it (remove it or choose another path)")
    users: dict[str, list[str]] = {}
    for version in index.versions:
        for entry in version.files:
            users.setdefault(entry.sha256, []).append(f"{version.ref}/{entry.path}")
    out.parent.mkdir(parents=True, exist_ok=True)
    temp = out.with_name(f".{out.name}.tmp-{uuid.uuid4().hex[:8]}")
    mode: Literal["w:gz", "w"] = "w:gz" if out.name.endswith((".tar.gz", ".tgz")) else "w"
    now = datetime.now(UTC).timestamp()
    try:
        with tarfile.open(temp, mode, format=tarfile.PAX_FORMAT) as tar:
            data = index.model_dump_json(indent=2).encode()
            tar.addfile(_member(BUNDLE_INDEX_NAME, len(data), now), io.BytesIO(data))
            for number, sha256 in enumerate(sorted(users), start=1):
                if progress is not None:
                    progress(f"exporting blob {number}/{len(users)} ({users[sha256][0]})")
                try:
                    with blobs.open(sha256) as reader:
                        tar.addfile(_member(f"blobs/{sha256}", reader.size_bytes, now), reader)
                except IntegrityError as exc:
                    raise IntegrityError(
                        f"cannot export {', '.join(users[sha256])}: {exc.message} (run `modelfleet registry verify`)"
                    ) from None
        with temp.open("rb") as handle:
            os.fsync(handle.fileno())
        interrupt.check()  # a Ctrl-C swallowed on the way still stops the publish
        os.replace(temp, out)
        fsync_dir(out.parent)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    return ExportReport(
        path=str(out),
        scope=index.scope,
        versions=[v.ref for v in index.versions],
        blobs=len(users),
        size_bytes=out.stat().st_size,
    )


def _member(name: str, size: int, mtime: float) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = int(mtime)
    info.mode = 0o644
    return info


def read_bundle(path: Path, blobs: BlobStore, progress: Progress | None = None) -> tuple[BundleIndex, int]:
    """Read a bundle's index and copy its blobs into ``blobs`` (each verified); returns (index, blobs written).

    Blobs go in before the caller registers anything, so an interrupted import leaves only unreferenced
    blobs, which ``gc`` removes. Nothing a bundle claims is trusted before it is checked: every member
    must be a blob the index names, of the size the index gives, once; the blobs missing here must fit
    the free space; and no member is read past its recorded size.
    """
    if not path.is_file():
        raise NotFound(f"bundle {path} does not exist")
    try:
        with tarfile.open(path, "r|*") as tar:
            index = _read_index(path, tar)
            users, sizes = _expected_blobs(path, index)
            _check_free_space(path, blobs, sizes)
            received: set[str] = set()
            written = 0
            # next() rather than iteration: iterating a stream-mode tar replays members already read.
            while (member := tar.next()) is not None:
                sha256 = _check_member(path, member, sizes, received)
                if progress is not None:
                    progress(f"importing blob {len(received) + 1}/{len(users)} ({users[sha256][0]})")
                handle = tar.extractfile(member)
                assert handle is not None  # a regular file member always has data
                try:
                    written += blobs.put_stream(_Bounded(handle, sizes[sha256], path, sha256), sha256)
                except IntegrityError as exc:
                    raise IntegrityError(
                        f"bundle {path}: {', '.join(users[sha256])} is corrupt: {exc.message}"
                    ) from None
                received.add(sha256)
    except (tarfile.TarError, EOFError, OSError) as exc:
        if isinstance(exc, OSError) and storage_error(path, "import", exc) is not None:
            raise  # the registry's disk, not the bundle: the caller says so
        raise InvalidInput(f"bundle {path} is truncated or not a tar file: {exc}") from None
    for sha256, used_by in users.items():
        if sha256 not in received and blobs.check(sha256) is not None:
            raise IntegrityError(f"bundle {path} lacks the bytes of {', '.join(used_by)}")
    return index, written


def _expected_blobs(path: Path, index: BundleIndex) -> tuple[dict[str, list[str]], dict[str, int]]:
    """Who uses each blob, and its size; refuses an index that gives one blob two sizes."""
    users: dict[str, list[str]] = {}
    sizes: dict[str, int] = {}
    for version in index.versions:
        for entry in version.files:
            users.setdefault(entry.sha256, []).append(f"{version.ref}/{entry.path}")
            known = sizes.setdefault(entry.sha256, entry.size_bytes)
            if known != entry.size_bytes or entry.size_bytes < 0:
                raise IntegrityError(
                    f"bundle {path}: the index gives {version.ref}/{entry.path} {entry.size_bytes} bytes, "
                    f"another file with the same sha256 {known}"
                )
    return users, sizes


def _check_free_space(path: Path, blobs: BlobStore, sizes: dict[str, int]) -> None:
    needed = sum(size for sha256, size in sizes.items() if not blobs.has(sha256))
    free = shutil.disk_usage(blobs.tmp_dir).free
    if needed > free:
        raise StorageError(
            f"cannot import {path}: the disk holding the registry has too little free space (its blobs need "
            f"{needed:,} bytes, {free:,} are free); nothing was imported: free space or import elsewhere"
        )


def _check_member(path: Path, member: tarfile.TarInfo, sizes: dict[str, int], received: set[str]) -> str:
    """The sha256 a member holds, once its name, kind and size agree with the index (before any byte is read)."""
    match = _BLOB_MEMBER.match(member.name)
    if match is None or not member.isfile():
        raise InvalidInput(f"bundle {path}: unexpected member {member.name!r}")
    sha256 = match[1]
    if sha256 not in sizes:
        raise IntegrityError(f"bundle {path}: member {member.name} is not named by the bundle's index")
    if sha256 in received:
        raise IntegrityError(f"bundle {path}: member {member.name} appears twice")
    if member.size != sizes[sha256]:
        raise IntegrityError(
            f"bundle {path}: member {member.name} holds {member.size:,} bytes, its index says {sizes[sha256]:,}"
        )
    return sha256


class _Bounded:
    """A member's reader that fails once it yields more than the index's size (stops at size + 0 bytes)."""

    def __init__(self, reader: IO[bytes], size_bytes: int, path: Path, sha256: str) -> None:
        self._reader = reader
        self._remaining = size_bytes
        self._what = f"bundle {path}: member blobs/{sha256}"

    def read(self, size: int = -1, /) -> bytes:
        wanted = self._remaining + 1 if size < 0 else min(size, self._remaining + 1)
        data = self._reader.read(wanted)
        if len(data) > self._remaining:
            raise IntegrityError(f"{self._what} holds more bytes than its index says")
        self._remaining -= len(data)
        return data


def _read_index(path: Path, tar: tarfile.TarFile) -> BundleIndex:
    first = tar.next()
    if first is None or first.name != BUNDLE_INDEX_NAME or not first.isfile():
        raise InvalidInput(f"{path} is not a modelfleet bundle: it does not start with {BUNDLE_INDEX_NAME}")
    if first.size > MAX_INDEX_BYTES:
        raise InvalidInput(
            f"bundle {path}: its index is {first.size:,} bytes, over the limit of {MAX_INDEX_BYTES:,}"
        )
    handle = tar.extractfile(first)
    assert handle is not None
    try:
        index = BundleIndex.model_validate_json(handle.read())
    except ValidationError as exc:
        raise InvalidInput(f"{path}: the bundle index is not valid: {str(exc).splitlines()[0]}") from None
    index.check()
    return index


def register_bundle(
    conn: sqlite3.Connection, contents: BundleIndex, blobs_written: int, now: str
) -> ImportReport:
    """Record a bundle's versions, signatures, history and aliases in one transaction (``conn``'s).

    Versions keep their numbers; one that exists here must hold identical hashes (else Conflict).
    History is restored for models that have none here; an alias is set where it does not exist here.
    """
    added: list[str] = []
    present: list[str] = []
    for version in contents.versions:
        existing = index.load_version(conn, version.name, version.version)
        if existing is None:
            index.insert_version(conn, version)
            added.append(version.ref)
            continue
        if existing.file_hashes() != version.file_hashes():
            raise Conflict(
                f"{version.ref} already exists here with different files; import into another registry"
            )
        present.append(version.ref)
        known = {s.key_id for s in existing.signatures}
        for signature in version.signatures:
            if signature.key_id not in known:
                index.insert_signature(conn, version.name, version.version, signature)
    events_added = 0
    for name in sorted({e.name for e in contents.alias_events}):
        if index.events(conn, name):
            continue
        for event in (e for e in contents.alias_events if e.name == name):
            index.insert_event(
                conn,
                name=name,
                alias=event.alias,
                action=event.action,
                from_version=event.from_version,
                to_version=event.to_version,
                reason=event.reason,
                actor=event.actor,
                at=event.at,
            )
            events_added += 1
    aliases_set: list[str] = []
    aliases_kept: list[str] = []
    for pointer in contents.aliases:
        check_alias_name(pointer.alias)
        current = index.aliases_of(conn, pointer.name).get(pointer.alias)
        label = f"{pointer.name}@{pointer.alias}"
        if current is None:
            index.set_alias(conn, pointer.name, pointer.alias, pointer.version, now)
            aliases_set.append(label)
        elif current != pointer.version:
            aliases_kept.append(label)
    return ImportReport(
        versions_added=added,
        versions_present=present,
        blobs_written=blobs_written,
        aliases_set=aliases_set,
        aliases_kept=aliases_kept,
        events_added=events_added,
    )
