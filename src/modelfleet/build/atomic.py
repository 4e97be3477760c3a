"""Write an output folder all at once or not at all.

The build writes into a sibling folder `<out>.tmp-XXXX`, fsyncs every file and the folder,
then renames it into place. Any failure, KeyboardInterrupt included, removes the temporary folder, so
a reader never sees a half-written artifact and an existing one is only replaced when asked to.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from modelfleet import interrupt
from modelfleet.errors import Conflict, InvalidInput
from modelfleet.fileio import fsync_dir

_FOLDER_MODE = 0o755


def check_output_free(output: Path, force: bool) -> None:
    """Refuse early (before any expensive work) to clobber an existing output."""
    if output.is_symlink() or output.is_file():
        raise InvalidInput(f"output {output} exists and is not a folder; choose another -o/--output")
    if output.exists() and not force:
        raise Conflict(f"output folder {output} already exists; pass --force to replace it")


def fsync_tree(root: Path) -> None:
    """Flush every file and folder below `root` (and `root` itself) to disk."""
    for path in sorted(root.rglob("*"), reverse=True):
        if path.is_file():
            with path.open("rb") as handle:
                os.fsync(handle.fileno())
        elif path.is_dir():
            fsync_dir(path)
    fsync_dir(root)


@contextlib.contextmanager
def staged_output(output: Path, force: bool) -> Iterator[Path]:
    """Yield an empty temporary sibling folder; on clean exit it becomes `output`."""
    output = output.absolute()
    check_output_free(output, force)
    output.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f"{output.name}.tmp-", dir=output.parent))
    staging.chmod(_FOLDER_MODE)  # mkdtemp makes it owner-only; servers may run as another user
    try:
        yield staging
        interrupt.check()  # a Ctrl-C swallowed on the way (in a __del__) still stops the publish
        fsync_tree(staging)
        _move_into_place(staging, output, force)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _move_into_place(staging: Path, output: Path, force: bool) -> None:
    check_output_free(output, force)  # again: another process may have written it meanwhile
    if not output.exists():
        os.rename(staging, output)
        fsync_dir(output.parent)
        return
    # Replacing: move the old folder aside first so a failed rename can put it back.
    retired = Path(tempfile.mkdtemp(prefix=f"{output.name}.old-", dir=output.parent))
    os.rmdir(retired)
    os.rename(output, retired)
    try:
        os.rename(staging, output)
    except BaseException:
        os.rename(retired, output)
        raise
    fsync_dir(output.parent)
    shutil.rmtree(retired, ignore_errors=True)
