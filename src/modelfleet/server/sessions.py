"""One open model per distinct artifact content, shared by every served name that points at it.

Eight names on one MiniLM took 889 MB as eight sessions against 210 MB for one; here they take one
ONNX Runtime session and one tokenizer. Each name keeps its own batcher and metrics (the repository
gives it a `NamedModel` view); the session closes when the last name using it lets go.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import psutil

from modelfleet.manifest import Manifest, read_manifest
from modelfleet.runtime.base import Model
from modelfleet.server.lanes import RunLane

# Manifest fields that name or describe a build rather than what a session computes.
_IDENTITY_FIELDS = {"name", "version", "created_at", "source", "verification", "libraries"}


def content_key(
    manifest: Manifest, intra_op_threads: int, length_grouping: bool, prepack_weights: bool = True
) -> str:
    """What two loads must agree on to share one open model: every file's sha256 (the model file and
    the tokenizer's), the pre- and post-processing, and the runtime options the session is opened with."""
    described = manifest.model_dump(mode="json", exclude=_IDENTITY_FIELDS)
    described["_runtime"] = [intra_op_threads, length_grouping, prepack_weights]
    return hashlib.sha256(orjson.dumps(described, option=orjson.OPT_SORT_KEYS)).hexdigest()


def artifact_key(
    path: Path, intra_op_threads: int, length_grouping: bool, prepack_weights: bool = True
) -> tuple[str, Manifest]:
    """`content_key` of the artifact folder at `path`, read from its manifest alone (no file is hashed)."""
    manifest = read_manifest(path)
    return content_key(manifest, intra_op_threads, length_grouping, prepack_weights), manifest


def rss_bytes() -> int:
    """This process's resident set size now."""
    return int(psutil.Process().memory_info().rss)


class NamedModel:
    """A served name's view of a shared open model: its own name and version, the shared session."""

    def __init__(self, base: Model, name: str, version: str, key: str) -> None:
        self.base = base
        self.key = key
        self.name = name
        self.version = version
        self.platform = base.platform
        self.inputs = base.inputs
        self.outputs = base.outputs
        self.sha256 = base.sha256
        self.file_size_bytes = base.file_size_bytes
        self.predict = base.predict
        self.validate_inputs = base.validate_inputs
        self.example_inputs = base.example_inputs

    def __getattr__(self, attribute: str) -> Any:
        return getattr(self.base, attribute)  # anything else a backend offers is the shared model's

    def close(self) -> None:
        """A no-op: the pool closes the shared model when its last name is released."""


@dataclass(slots=True)
class Session:
    """One open model, the names using it, and what its first load measured."""

    key: str
    model: Model
    users: int = 0
    size_bytes: int = 0  # RSS growth over its open and first warm-up, at least its model file's size
    load_s: float = 0.0
    warmup_runs: tuple[tuple[int, float], ...] = ()  # the first name's warm-up: seeds later names' batchers
    lane: RunLane | None = None  # the names' one run queue, from the second name on (server/lanes.py)

    def shared_lane(self, workers: int) -> RunLane:
        """The run queue every name on this session runs its batches on, made when a second name joins."""
        if self.lane is None:
            self.lane = RunLane(self.model.predict, workers, self.key[:12])
        return self.lane

    def close(self) -> None:
        if self.lane is not None:
            self.lane.close()
        self.model.close()


class SessionPool:
    """Open models by content key, reference-counted; concurrent acquires of one key open it once."""

    def __init__(self) -> None:
        self._sessions: dict[str, Session] = {}
        self._opening: dict[str, asyncio.Future[Session]] = {}

    def __len__(self) -> int:
        return len(self._sessions)

    def get(self, key: str) -> Session | None:
        return self._sessions.get(key)

    def sessions(self) -> list[Session]:
        return list(self._sessions.values())

    def resident_bytes(self) -> int:
        return sum(session.size_bytes for session in self._sessions.values())

    async def acquire(self, key: str, open_model: Callable[[], Model]) -> tuple[Session, bool]:
        """The session for `key`, one more user counted; opened in a worker thread if none is open.
        True with it when this call opened it (the caller warms it and records its size)."""
        while True:
            session = self._sessions.get(key)
            if session is not None:
                session.users += 1
                return session, False
            opening = self._opening.get(key)
            if opening is None:
                break
            await asyncio.wait([opening])  # opened, or its opener failed and the loop opens it here
        future: asyncio.Future[Session] = asyncio.get_running_loop().create_future()
        self._opening[key] = future
        try:
            model = await asyncio.to_thread(open_model)
            session = Session(key=key, model=model, users=1, size_bytes=model.file_size_bytes)
            self._sessions[key] = session
            future.set_result(session)
            return session, True
        except BaseException:
            future.cancel()
            raise
        finally:
            del self._opening[key]

    def release(self, key: str) -> bool:
        """One user fewer; the last closes the model. True when it was closed (or the pool was)."""
        session = self._sessions.get(key)
        if session is None:  # the pool was closed while a load was still being cancelled
            return True
        session.users -= 1
        if session.users > 0:
            return False
        del self._sessions[key]
        session.close()
        return True

    def close(self) -> None:
        for session in self._sessions.values():
            session.close()
        self._sessions.clear()


def named(session: Session, name: str, version: str) -> NamedModel:
    return NamedModel(session.model, name, version, session.key)


__all__ = ["NamedModel", "Session", "SessionPool", "artifact_key", "content_key", "named", "rss_bytes"]
