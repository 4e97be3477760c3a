"""The model registry: numbered immutable versions with lineage, aliases with history, verified loads.

Layout of a registry folder::

    index.sqlite      SQLite (WAL): versions, files, aliases, alias history, signatures
    blobs/ab/ab…      every file's bytes once, named by sha256 (optionally AES-GCM encrypted)
    tmp/              temp files of writes in progress; leftovers are removed when no writer runs
    checkouts/        verified copies that `materialize` hands to the server (unencrypted registries)
    registry.lock     flock: writers share it, `gc` takes it alone

Crash safety: `add` and `import` write blobs first (each atomically), then register the version in one
SQLite transaction. A version row therefore only exists once all its bytes do; a crash before the commit
leaves unreferenced blobs and temp files, which `gc` removes. A full or read-only disk is a StorageError.

Audit: every write (add, alias, promote, rollback, sign, gc, export, import) is recorded in the
registry's AuditLog (``<root>/audit.jsonl`` unless another is given) with its actor and outcome, by the
library itself, so a script calling ``registry.promote(...)`` leaves the same trail as the CLI.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import sqlite3
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from modelfleet.errors import Conflict, IntegrityError, InvalidInput, NotFound
from modelfleet.manifest import MANIFEST_FILE, read_manifest
from modelfleet.registry import bundle, index, lineage, signing
from modelfleet.registry.aliases import check_alias_name, rollback_target
from modelfleet.registry.blobs import BlobCipher, BlobStore, is_sha256_hex
from modelfleet.registry.checkout import first_mismatch, private_temp_dir, write_checkout
from modelfleet.registry.models import (
    AliasAction,
    AliasEvent,
    BlobProblem,
    ExportReport,
    FileEntry,
    GcReport,
    ImportReport,
    ModelSummary,
    ModelVersion,
    RetrainingLineage,
    SignatureRecord,
    VerifyReport,
)
from modelfleet.registry.names import check_model_name, describe_ranges, parse_ref, require_reason
from modelfleet.registry.recording import AuditTrail, default_actor, storage_errors
from modelfleet.security.audit import AuditLog
from modelfleet.types import ModelRef, Progress

INDEX_FILE = "index.sqlite"
LOCK_FILE = "registry.lock"
AUDIT_FILE = "audit.jsonl"


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Registry:
    """A registry folder. Cheap to construct; every method opens its own short SQLite transaction."""

    def __init__(
        self,
        root: Path,
        encryption_key: bytes | None = None,
        *,
        cache_dir: Path | None = None,
        create: bool = True,
        audit: AuditLog | None = None,
    ) -> None:
        """Open the registry at ``root``; with ``create`` (the default) make it when it does not exist.

        ``audit`` receives a record of every write; by default ``<root>/audit.jsonl``.
        """
        self.root = Path(root)
        self.audit = AuditTrail(audit or AuditLog(self.root / AUDIT_FILE), self.root)
        if not create and not (self.root / INDEX_FILE).is_file():
            raise NotFound(f"there is no registry at {self.root} (`modelfleet registry add` creates one)")
        cipher = BlobCipher(encryption_key) if encryption_key is not None else None
        self._index = index.Index(self.root / INDEX_FILE)
        with storage_errors(self.root, "open the registry"):
            self._check_root()
            meta = self._index.initialise(
                {
                    "schema_version": index.SCHEMA_VERSION,
                    "store_id": uuid.uuid4().hex,
                    "encryption": "aes-256-gcm" if cipher is not None else "none",
                    "key_check": cipher.key_check() if cipher is not None else "",
                }
            )
        if meta["schema_version"] != index.SCHEMA_VERSION:
            raise InvalidInput(
                f"registry {self.root} has schema version {meta['schema_version']}; this modelfleet reads {index.SCHEMA_VERSION}"
            )
        self._check_key(meta, cipher)
        self.store_id = meta["store_id"]
        self.encrypted = cipher is not None
        self._blobs = BlobStore(self.root, cipher)
        if cache_dir is not None:
            self.cache_dir = cache_dir
        elif cipher is None:
            self.cache_dir = self.root / "checkouts"
        else:
            # Checkouts are plaintext by necessity (the runtime reads them); keep them out of the store so a
            # copied store stays useless without the key, in a folder only this user can read.
            self.cache_dir = private_temp_dir() / self.store_id
        with storage_errors(self.root, "open the registry"):
            self._clean_temp_if_idle()

    # ----- opening -------------------------------------------------------------------------------------

    def _check_root(self) -> None:
        if self.root.exists() and not self.root.is_dir():
            raise InvalidInput(f"registry path {self.root} is a file, not a folder")
        if self.root.is_dir() and not (self.root / INDEX_FILE).exists() and any(self.root.iterdir()):
            raise InvalidInput(
                f"{self.root} is not empty and is not a modelfleet registry; choose another folder"
            )
        self.root.mkdir(parents=True, exist_ok=True)

    def _check_key(self, meta: dict[str, str], cipher: BlobCipher | None) -> None:
        if meta["encryption"] == "none" and cipher is not None:
            raise InvalidInput(f"registry {self.root} is not encrypted; open it without an encryption key")
        if meta["encryption"] != "none" and cipher is None:
            raise InvalidInput(
                f"registry {self.root} is encrypted; give its key (--encryption-key-file, MODELFLEET_REGISTRY_KEY_FILE "
                "or MODELFLEET_REGISTRY_KEY)"
            )
        if cipher is not None and cipher.key_check() != meta["key_check"]:
            raise InvalidInput(f"the encryption key is not the key of registry {self.root}")

    @contextmanager
    def _lock(self, exclusive: bool, blocking: bool = True) -> Iterator[bool]:
        """Writers hold it shared; gc and temp cleaning hold it alone, so they never delete work in flight."""
        fd = os.open(self.root / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            flags = (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | (0 if blocking else fcntl.LOCK_NB)
            try:
                fcntl.flock(fd, flags)
            except BlockingIOError:
                yield False
                return
            yield True
        finally:
            os.close(fd)  # closing releases the lock (a killed process releases it too)

    def _clean_temp_if_idle(self) -> None:
        with self._lock(exclusive=True, blocking=False) as acquired:
            if acquired:
                self._blobs.clean_temp()

    # ----- reading -------------------------------------------------------------------------------------

    def _resolve(self, conn: sqlite3.Connection, ref: ModelRef | str) -> tuple[str, int]:
        parsed = parse_ref(ref)
        numbers = index.version_numbers(conn, parsed.name)
        if not numbers:
            raise NotFound(f"model {parsed.name!r} is not in the registry at {self.root}")
        if parsed.version is not None:
            number = int(parsed.version)
            if number not in numbers:
                raise NotFound(
                    f"model {parsed.name!r} has no version {number} (versions {describe_ranges(numbers)})"
                )
            return parsed.name, number
        if parsed.alias is not None:
            aliases = index.aliases_of(conn, parsed.name)
            if parsed.alias not in aliases:
                known = ", ".join(sorted(aliases)) or "none"
                raise NotFound(f"model {parsed.name!r} has no alias {parsed.alias!r} (aliases: {known})")
            return parsed.name, aliases[parsed.alias]
        return parsed.name, numbers[-1]

    def get(self, ref: ModelRef | str) -> ModelVersion:
        """Resolve ``name`` (latest), ``name:3`` or ``name@production`` to its version record."""
        with self._index.connect() as conn:
            name, number = self._resolve(conn, ref)
            version = index.load_version(conn, name, number)
        assert version is not None
        return version

    def list_models(self) -> list[ModelSummary]:
        with self._index.connect() as conn:
            return index.summaries(conn)

    def list_versions(self, name: str) -> list[ModelVersion]:
        with self._index.connect() as conn:
            numbers = index.version_numbers(conn, name)
            if not numbers:
                raise NotFound(f"model {name!r} is not in the registry at {self.root}")
            return [v for n in numbers if (v := index.load_version(conn, name, n)) is not None]

    def history(self, name: str, alias: str | None = None) -> list[AliasEvent]:
        with self._index.connect() as conn:
            if not index.model_exists(conn, name):
                raise NotFound(f"model {name!r} is not in the registry at {self.root}")
            return index.events(conn, name, alias)

    # ----- adding --------------------------------------------------------------------------------------

    def add(
        self,
        artifact_dir: Path,
        *,
        actor: str,
        name: str | None = None,
        source_uri: str | None = None,
        training_data_sha256: str | None = None,
        training_data_uri: str | None = None,
        training_params: dict[str, Any] | None = None,
        parent_version: int | None = None,
        retraining: RetrainingLineage | None = None,
        progress: Progress | None = None,
    ) -> ModelVersion:
        """Register an artifact folder as the model's next version, verifying every file against its manifest.

        Raises Conflict when the model already has a version with this exact manifest (versions identify
        bytes; point an alias at the existing one instead).
        """
        artifact_dir = Path(artifact_dir)
        with self.audit.operation("registry.add", actor, artifact=str(artifact_dir)) as learned:
            with storage_errors(self.root, f"register {artifact_dir}"):
                extras = (source_uri, training_data_sha256, training_data_uri, training_params, retraining)
                record = self._add(artifact_dir, actor, name, extras, parent_version, learned, progress)
            learned.update(version=record.version, manifest_sha256=record.manifest_sha256)
        return record

    def _add(
        self,
        artifact_dir: Path,
        actor: str,
        name: str | None,
        lineage_args: tuple[
            str | None, str | None, str | None, dict[str, Any] | None, RetrainingLineage | None
        ],
        parent_version: int | None,
        learned: dict[str, object],
        progress: Progress | None,
    ) -> ModelVersion:
        source_uri, training_data_sha256, training_data_uri, training_params, retraining = lineage_args
        manifest = read_manifest(artifact_dir)
        model_name = check_model_name(name or manifest.name)
        learned["model"] = model_name
        if training_data_sha256 is not None and not is_sha256_hex(training_data_sha256):
            raise InvalidInput("training data sha256 must be 64 lowercase hex digits")
        manifest_bytes = (artifact_dir / MANIFEST_FILE).read_bytes()
        manifest_sha256 = hashlib.sha256(manifest_bytes).hexdigest()
        planned = lineage.planned_files(artifact_dir, manifest)
        with self._index.connect() as conn:
            index.refuse_duplicate(conn, model_name, manifest_sha256)
            if parent_version is not None and parent_version not in index.version_numbers(conn, model_name):
                raise NotFound(f"parent version {model_name}:{parent_version} is not in the registry")
        record_lineage = lineage.build_lineage(
            manifest, source_uri, training_data_sha256, training_data_uri, training_params, parent_version
        ).model_copy(update={"retraining": retraining})
        with self._lock(exclusive=False):
            for number, (relative, sha256, _size) in enumerate(planned, start=1):
                if progress is not None:
                    progress(f"storing {relative} ({number}/{len(planned)})")
                try:
                    self._blobs.put_file(artifact_dir / relative, sha256)
                except IntegrityError as exc:
                    raise IntegrityError(
                        f"artifact {artifact_dir}: file {relative} does not match its manifest: {exc.message}"
                    ) from None
            self._blobs.put_bytes(manifest_bytes, manifest_sha256)
            files = [FileEntry(path=p, sha256=s, size_bytes=n) for p, s, n in planned]
            files.append(
                FileEntry(path=MANIFEST_FILE, sha256=manifest_sha256, size_bytes=len(manifest_bytes))
            )
            files.sort(key=lambda entry: entry.path)
            with self._index.connect(write=True) as conn:
                index.refuse_duplicate(conn, model_name, manifest_sha256)
                numbers = index.version_numbers(conn, model_name)
                record = ModelVersion(
                    name=model_name,
                    version=(numbers[-1] + 1) if numbers else 1,
                    created_at=utc_now(),
                    actor=actor,
                    manifest_sha256=manifest_sha256,
                    size_bytes=sum(f.size_bytes for f in files),
                    files=files,
                    lineage=record_lineage,
                )
                index.insert_version(conn, record)
        return record

    # ----- aliases -------------------------------------------------------------------------------------

    def alias(
        self, ref: ModelRef | str, alias: str, *, actor: str, reason: str = "", action: AliasAction = "set"
    ) -> AliasEvent:
        """Point ``alias`` at the version ``ref`` names, recording who, when and why."""
        event_name = "registry.alias" if action == "set" else f"registry.{action}"
        with self.audit.operation(event_name, actor, ref=str(ref), alias=alias, reason=reason) as learned:
            if action == "promote":
                require_reason(reason, "promote")
            check_alias_name(alias)
            with (
                storage_errors(self.root, f"move {ref} to @{alias}"),
                self._index.connect(write=True) as conn,
            ):
                name, number = self._resolve(conn, ref)
                current = index.aliases_of(conn, name).get(alias)
                if current == number:
                    raise Conflict(f"{name}@{alias} already points at version {number}")
                event = self._move(conn, name, alias, current, number, action, reason, actor)
            learned.update(model=event.name, from_version=event.from_version, to_version=event.to_version)
        return event

    def promote(
        self, ref: ModelRef | str, *, actor: str, reason: str, alias: str = "production"
    ) -> AliasEvent:
        """Point ``alias`` (production by default) at ``ref``; the version it replaces stays registered."""
        return self.alias(ref, alias, actor=actor, reason=reason, action="promote")

    def rollback(
        self, name: str, *, actor: str, reason: str, alias: str = "production", to_version: int | None = None
    ) -> AliasEvent:
        """Move ``alias`` back to where it pointed before its last promotion, or to ``to_version``."""
        with self.audit.operation(
            "registry.rollback", actor, model=name, alias=alias, reason=reason
        ) as learned:
            require_reason(reason, "roll back")
            check_alias_name(alias)
            with storage_errors(self.root, f"roll back {name}@{alias}"):
                event = self._rollback(name, alias, to_version, reason, actor)
            learned.update(from_version=event.from_version, to_version=event.to_version)
        return event

    def _rollback(self, name: str, alias: str, to_version: int | None, reason: str, actor: str) -> AliasEvent:
        with self._index.connect(write=True) as conn:
            if not index.model_exists(conn, name):
                raise NotFound(f"model {name!r} is not in the registry at {self.root}")
            current = index.aliases_of(conn, name).get(alias)
            if current is None:
                raise NotFound(f"model {name!r} has no alias {alias!r} to roll back")
            target = (
                to_version if to_version is not None else rollback_target(index.events(conn, name, alias))
            )
            if target is None:
                raise Conflict(
                    f"{name}@{alias} has no earlier version to roll back to (it has only ever been {current})"
                )
            if target not in index.version_numbers(conn, name):
                raise NotFound(f"model {name!r} has no version {target}")
            if target == current:
                raise Conflict(f"{name}@{alias} already points at version {target}")
            return self._move(conn, name, alias, current, target, "rollback", reason, actor)

    @staticmethod
    def _move(
        conn: sqlite3.Connection,
        name: str,
        alias: str,
        current: int | None,
        target: int,
        action: AliasAction,
        reason: str,
        actor: str,
    ) -> AliasEvent:
        at = utc_now()
        index.set_alias(conn, name, alias, target, at)
        return index.insert_event(
            conn,
            name=name,
            alias=alias,
            action=action,
            from_version=current,
            to_version=target,
            reason=reason,
            actor=actor,
            at=at,
        )

    # ----- signing -------------------------------------------------------------------------------------

    def sign(self, ref: ModelRef | str, private_key: Ed25519PrivateKey, *, actor: str) -> SignatureRecord:
        """Sign a version's name, number and file hashes with an Ed25519 key, and record the signature."""
        with self.audit.operation("registry.sign", actor, ref=str(ref)) as learned:
            with storage_errors(self.root, f"sign {ref}"):
                record, version = self._sign(ref, private_key, actor)
            learned.update(model=version.name, version=version.version, key_id=record.key_id)
        return record

    def _sign(
        self, ref: ModelRef | str, private_key: Ed25519PrivateKey, actor: str
    ) -> tuple[SignatureRecord, ModelVersion]:
        version = self.get(ref)
        record = signing.sign_version(version, private_key, actor, utc_now())
        with self._index.connect(write=True) as conn:
            index.insert_signature(conn, version.name, version.version, record)
        return record, version

    def verify_signature(
        self, ref: ModelRef | str | ModelVersion, trusted_keys: Sequence[Ed25519PublicKey]
    ) -> SignatureRecord:
        """The recorded signature made by one of ``trusted_keys``; IntegrityError when there is none."""
        return signing.trusted_signature(
            ref if isinstance(ref, ModelVersion) else self.get(ref), trusted_keys
        )

    # ----- loading -------------------------------------------------------------------------------------

    def materialize(
        self,
        ref: ModelRef | str,
        dest_dir: Path | None = None,
        *,
        trusted_keys: Sequence[Ed25519PublicKey] | None = None,
    ) -> Path:
        """A folder holding the version's files, every sha256 verified now; what the server loads from.

        Without ``dest_dir`` a cached checkout is reused after re-verifying every file (a damaged cache is
        rebuilt from the blobs). A blob that fails verification raises IntegrityError naming the file.
        With ``trusted_keys`` (even empty) a valid signature by one of them is required.
        """
        version = self.get(ref)
        if trusted_keys is not None:
            self.verify_signature(version, trusted_keys)
        managed = dest_dir is None
        dest = self.cache_dir / version.name / str(version.version) if dest_dir is None else Path(dest_dir)
        if managed and not self.cache_dir.exists():
            self.cache_dir.mkdir(parents=True, mode=0o700)
        if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
            problem = first_mismatch(dest, version.files) if dest.is_dir() else f"{dest} is a file"
            if problem is None:
                return dest
            if not managed:
                raise IntegrityError(
                    f"{dest} is not a checkout of {version.ref}: {problem}; remove it or choose an empty folder"
                )
            shutil.rmtree(dest)
        elif dest.is_dir():
            dest.rmdir()
        write_checkout(self._blobs, version, dest)
        return dest

    # ----- maintenance ---------------------------------------------------------------------------------

    def verify(
        self,
        ref: ModelRef | str | None = None,
        *,
        trusted_keys: Sequence[Ed25519PublicKey] | None = None,
        progress: Progress | None = None,
    ) -> VerifyReport:
        """Read and hash every blob (of ``ref``, of every version of a bare model name, or of everything)."""
        with self._index.connect() as conn:
            selected = self._select(conn, ref)
            users = index.blob_users(conn, selected)
            versions = [v for n, k in selected if (v := index.load_version(conn, n, k)) is not None]
            index_problems = index.integrity_problems(conn)
            all_referenced = set(index.blob_users(conn)) if ref is None else set()
        sizes = {f.sha256: f.size_bytes for v in versions for f in v.files}
        problems: list[BlobProblem] = []
        checked_bytes = 0
        for number, (sha256, used_by) in enumerate(sorted(users.items()), start=1):
            if progress is not None:
                progress(f"verifying blob {number}/{len(users)} ({used_by[0]})")
            if not self._blobs.has(sha256):
                problems.append(
                    BlobProblem(sha256=sha256, problem="missing", detail="blob is missing", used_by=used_by)
                )
                continue
            issue = self._blobs.check(sha256)
            if issue is not None:
                problems.append(BlobProblem(sha256=sha256, problem="corrupt", detail=issue, used_by=used_by))
            else:
                checked_bytes += sizes[sha256]
        signature_problems = [p for v in versions if (p := self._signature_problem(v, trusted_keys))]
        orphans = sum(1 for d in self._blobs.digests() if d not in all_referenced) if ref is None else 0
        return VerifyReport(
            checked_versions=len(versions),
            checked_blobs=len(users),
            checked_bytes=checked_bytes,
            problems=problems,
            signature_problems=signature_problems,
            index_problems=index_problems,
            orphan_blobs=orphans,
            temp_files=len(self._blobs.temp_files()),
        )

    def _signature_problem(
        self, version: ModelVersion, trusted_keys: Sequence[Ed25519PublicKey] | None
    ) -> str | None:
        mismatch = signing.mismatched_signature(version)
        if mismatch is not None:
            return mismatch
        if trusted_keys is not None:
            try:
                self.verify_signature(version, trusted_keys)
            except IntegrityError as exc:
                return exc.message
        return None

    def _select(self, conn: sqlite3.Connection, ref: ModelRef | str | None) -> list[tuple[str, int]]:
        if ref is None:
            return [(n, k) for n in index.model_names(conn) for k in index.version_numbers(conn, n)]
        parsed = parse_ref(ref)
        if parsed.version is None and parsed.alias is None:
            numbers = index.version_numbers(conn, parsed.name)
            if not numbers:
                raise NotFound(f"model {parsed.name!r} is not in the registry at {self.root}")
            return [(parsed.name, k) for k in numbers]
        return [self._resolve(conn, parsed)]

    def gc(self, *, dry_run: bool = False, actor: str | None = None) -> GcReport:
        """Remove blobs no version uses and leftovers of interrupted writes; never a referenced blob."""
        if dry_run:
            return self._gc(dry_run=True)
        with self.audit.operation("registry.gc", actor or default_actor()) as learned:
            with storage_errors(self.root, "collect garbage"):
                report = self._gc(dry_run=False)
            learned.update(removed_blobs=report.removed_blobs, freed_bytes=report.freed_bytes)
        return report

    def _gc(self, *, dry_run: bool) -> GcReport:
        with self._lock(exclusive=True):
            with self._index.connect() as conn:
                referenced = set(index.blob_users(conn))
            orphans = [d for d in self._blobs.digests() if d not in referenced]
            temps = self._blobs.temp_files()
            if dry_run:
                freed = sum(self._blobs.disk_size(d) for d in orphans) + sum(p.stat().st_size for p in temps)
                return GcReport(
                    dry_run=True, removed_blobs=len(orphans), freed_bytes=freed, removed_temp_files=len(temps)
                )
            freed = sum(p.stat().st_size for p in temps)
            self._blobs.clean_temp()
            freed += sum(self._blobs.remove(d) for d in orphans)
        return GcReport(
            dry_run=False, removed_blobs=len(orphans), freed_bytes=freed, removed_temp_files=len(temps)
        )

    # ----- bundles -------------------------------------------------------------------------------------

    def export_bundle(
        self,
        out: Path,
        ref: ModelRef | str | None = None,
        *,
        progress: Progress | None = None,
        actor: str | None = None,
    ) -> ExportReport:
        """Write one version (``name:3``, ``name@alias``), a whole model (``name``) or everything (None) to ``out``.

        Audited: a bundle is a plaintext copy of the models.
        """
        with self.audit.operation(
            "registry.export",
            actor or default_actor(),
            ref=None if ref is None else str(ref),
            bundle=str(out),
        ) as learned:
            report = self._export(Path(out), ref, progress)
            learned.update(versions=report.versions, size_bytes=report.size_bytes)
        return report

    def _export(self, out: Path, ref: ModelRef | str | None, progress: Progress | None) -> ExportReport:
        with self._index.connect() as conn:
            selected = self._select(conn, ref)
            versions = [v for n, k in selected if (v := index.load_version(conn, n, k)) is not None]
            parsed = None if ref is None else parse_ref(ref)
            contents = bundle.bundle_index(conn, versions, parsed, self.store_id, utc_now())
        return bundle.write_bundle(out, contents, self._blobs, progress)

    def import_bundle(
        self, path: Path, *, progress: Progress | None = None, actor: str | None = None
    ) -> ImportReport:
        """Restore a bundle: same version numbers, same hashes, aliases and history where they are new here.

        Every member's size is checked against the index before and while it is copied, and the bundle's
        total against the free space, so a hostile or damaged bundle cannot fill the disk.
        """
        with self.audit.operation("registry.import", actor or default_actor(), bundle=str(path)) as learned:
            with storage_errors(self.root, f"import {path}"), self._lock(exclusive=False):
                contents, written = bundle.read_bundle(Path(path), self._blobs, progress)
                with self._index.connect(write=True) as conn:
                    for version in contents.versions:
                        check_model_name(version.name)
                    report = bundle.register_bundle(conn, contents, written, utc_now())
            learned.update(versions_added=report.versions_added, aliases_set=report.aliases_set)
        return report


# ----- helpers ---------------------------------------------------------------------------------------------
