"""What every registry write shares: an audit record of who did what and how it ended, and disk errors
turned into one clear StorageError (exit code 5) instead of an OSError or a SQLite message.

A write that fails part-way leaves no index row (the version is registered in one SQLite transaction
after all its bytes are stored) and no temp file (each blob is written to a temp file that is removed
on failure); at most whole, unreferenced blobs remain, which `verify` counts and `gc` removes.
"""

from __future__ import annotations

import errno
import os
import pwd
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from modelfleet.errors import ModelfleetError, StorageError
from modelfleet.security.audit import AuditLog

_FULL = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
_READ_ONLY = {errno.EROFS}


def default_actor() -> str:
    """The login name of this process's user (from the password database), else ``uid-N``."""
    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return f"uid-{os.getuid()}"


def storage_error(root: Path, action: str, exc: BaseException) -> StorageError | None:
    """The StorageError a disk-full or read-only failure of ``action`` means; None for any other error."""
    if isinstance(exc, OSError) and exc.errno in _FULL | _READ_ONLY:
        cause = "is read-only" if exc.errno in _READ_ONLY else f"is full ({exc.strerror})"
    elif isinstance(exc, sqlite3.OperationalError) and ("readonly" in str(exc) or _read_only(root)):
        cause = "is read-only"  # SQLite says "unable to open database file" when it cannot make its WAL files
    elif isinstance(exc, sqlite3.OperationalError) and "disk is full" in str(exc):
        cause = "is full"
    else:
        return None
    return StorageError(
        f"cannot {action}: the file system holding the registry at {root} {cause}; nothing was "
        "registered (free space or make it writable, then retry; `modelfleet registry gc` removes leftovers)"
    )


def _read_only(root: Path) -> bool:
    try:
        return bool(os.statvfs(root).f_flag & os.ST_RDONLY)
    except OSError:
        return False


@contextmanager
def storage_errors(root: Path, action: str) -> Iterator[None]:
    """Turn a disk-full or read-only OSError/SQLite error inside the block into a StorageError."""
    try:
        yield
    except (OSError, sqlite3.OperationalError) as exc:
        translated = storage_error(root, action, exc)
        if translated is None:
            raise
        raise translated from None


class AuditTrail:
    """Records every registry write with its actor and outcome (``ok`` or ``failed: <error class>``)."""

    def __init__(self, log: AuditLog, root: Path) -> None:
        self.log = log
        self._root = root

    @contextmanager
    def operation(self, event: str, actor: str, **fields: object) -> Iterator[dict[str, object]]:
        """Record ``event`` when the block ends; the block adds what it learns (a version number) to the dict."""
        learned: dict[str, object] = {}
        try:
            yield learned
        except BaseException as exc:
            outcome = f"failed: {type(exc).__name__}"
            error = _first_line(exc)
            # The disk that refused the write may refuse its record too; the error raised says why.
            with suppress(OSError):
                self.log.record(event, actor=actor, outcome=outcome, error=error, **(fields | learned))
            raise
        try:
            self.log.record(event, actor=actor, outcome="ok", **(fields | learned))
        except OSError as exc:
            translated = storage_error(self._root, f"write the audit record of {event}", exc)
            raise translated or exc from None


def _first_line(exc: BaseException) -> str:
    if isinstance(exc, ModelfleetError):
        return exc.message
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted"
    text = str(exc)
    return text.splitlines()[0] if text else type(exc).__name__
