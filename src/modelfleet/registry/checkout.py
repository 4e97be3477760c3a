"""Write a version's files into a folder, verifying every byte, atomically.

This is what the server calls (through ``Registry.materialize``) before loading a model: a folder that
exists is checked file by file against the recorded sha256; a new one is written next to its final place
and renamed in, so a concurrent reader never sees a half-written checkout.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
import tempfile
import uuid
from contextlib import suppress
from pathlib import Path, PurePosixPath

from modelfleet.errors import IntegrityError, InvalidInput
from modelfleet.manifest import sha256_file
from modelfleet.registry.blobs import CHUNK_BYTES, BlobStore
from modelfleet.registry.models import FileEntry, ModelVersion


def check_relative_path(text: str) -> str:
    """Refuse paths that could escape the folder they are written into (``..``, absolute, backslashes)."""
    path = PurePosixPath(text)
    if (
        not text
        or path.is_absolute()
        or "\\" in text
        or any(part in ("", ".", "..") for part in text.split("/"))
    ):
        raise InvalidInput(f"file path {text!r} is not a plain relative path inside the artifact")
    return path.as_posix()


def first_mismatch(folder: Path, files: list[FileEntry]) -> str | None:
    """None when every file is present with its recorded sha256, else a message naming the first bad file."""
    for entry in files:
        path = folder / entry.path
        if not path.is_file():
            return f"file {entry.path} is missing from {folder}"
        actual = sha256_file(path)
        if actual != entry.sha256:
            return f"file {entry.path} is corrupt (sha256 {actual[:12]}… expected {entry.sha256[:12]}…)"
    return None


def write_checkout(blobs: BlobStore, version: ModelVersion, dest: Path) -> None:
    """Extract ``version`` into ``dest`` (which must not exist), verifying each blob as it is read."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    temp = dest.parent / f".{dest.name}.tmp-{uuid.uuid4().hex[:8]}"
    temp.mkdir()
    try:
        for entry in version.files:
            relative = check_relative_path(entry.path)
            target = temp / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                with blobs.open(entry.sha256) as reader, target.open("wb") as out:
                    while chunk := reader.read(CHUNK_BYTES):
                        out.write(chunk)
            except IntegrityError as exc:
                raise IntegrityError(
                    f"{version.ref}: file {entry.path} failed verification in the registry (blob "
                    f"{entry.sha256[:12]}…): {exc.message}; refusing to load it (run `modelfleet registry verify`)"
                ) from None
            # Read-only: a checkout is a verified copy, not a place to edit.
            os.chmod(target, 0o444)
        try:
            os.rename(temp, dest)
        except OSError as exc:
            if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                raise
            # Someone else (another worker) finished the same checkout first; keep theirs if it is good.
            shutil.rmtree(temp, ignore_errors=True)
            problem = first_mismatch(dest, version.files)
            if problem is not None:
                raise IntegrityError(f"{version.ref}: {problem}") from None
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise


def private_temp_dir() -> Path:
    """``$TMPDIR/modelfleet-checkouts-<uid>``, created 0700 and refused if someone else owns it or it is a link."""
    path = Path(tempfile.gettempdir()) / f"modelfleet-checkouts-{os.getuid()}"
    with suppress(FileExistsError):
        path.mkdir(mode=0o700)
    info = os.lstat(path)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
        raise InvalidInput(
            f"{path} is not a folder owned by this user; refusing to put decrypted models there"
        )
    if stat.S_IMODE(info.st_mode) != 0o700:
        os.chmod(path, 0o700)
    return path
