"""The session pool: one open model per content key, reference-counted, opened once however many ask."""

from __future__ import annotations

import asyncio
from pathlib import Path

from modelfleet.runtime import Model, load_model
from modelfleet.server.sessions import SessionPool, artifact_key, named


async def test_names_share_one_open_model_until_the_last_lets_go(iris_artifact: Path) -> None:
    opened: list[Model] = []

    def open_iris() -> Model:
        model = load_model(iris_artifact, intra_op_threads=1)
        opened.append(model)
        return model

    key, manifest = artifact_key(iris_artifact, intra_op_threads=1, length_grouping=True)
    assert manifest.name == "iris"
    pool = SessionPool()
    # Three names ask at once: the model opens once.
    results = await asyncio.gather(*(pool.acquire(key, open_iris) for _ in range(3)))
    assert len(opened) == 1 and len(pool) == 1
    assert sorted(fresh for _, fresh in results) == [False, False, True]
    session = results[0][0]
    assert session.users == 3 and all(s is session for s, _ in results)

    first, second = named(session, "a", "1"), named(session, "b", "7")
    assert (first.name, first.version, second.name, second.version) == ("a", "1", "b", "7")
    assert first.base is second.base is session.model  # one session runs both names

    assert pool.release(key) is False
    assert pool.release(key) is False
    assert pool.get(key) is session
    assert pool.release(key) is True  # the last user closes it
    assert pool.get(key) is None and len(pool) == 0
    assert pool.release(key) is True  # a late release after close is harmless


async def test_a_failed_open_is_retried_by_the_next_caller(iris_artifact: Path) -> None:
    pool = SessionPool()
    key = artifact_key(iris_artifact, 1, True)[0]

    def broken() -> Model:
        raise OSError("disk gone")

    try:
        await pool.acquire(key, broken)
    except OSError:
        pass
    else:
        raise AssertionError("the open did not fail")
    session, fresh = await pool.acquire(key, lambda: load_model(iris_artifact, intra_op_threads=1))
    assert fresh and session.users == 1
    pool.close()
