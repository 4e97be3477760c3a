"""Follow registry aliases: when `name@production` moves, load the new version, warm it, switch, unload the old.

The switch is atomic for clients: unversioned requests go to the old version until the new one is READY,
then to the new one; requests already queued on the old version finish there before it is unloaded.
A new version that fails to load or verify is reported (repository index reason, log) and the old one
keeps serving; that version is not retried until the alias moves again.

A lazy model (a memory budget is set) follows too: the new version is registered in place of the old,
so the next cold load opens it (and, while the old one is loaded, it loads beside it and takes over).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from modelfleet.config.serve import ModelConfig
from modelfleet.errors import ModelfleetError, NotFound, Unavailable
from modelfleet.server.registry_source import RegistrySource, follows_alias, pinned_config
from modelfleet.server.repository import ModelRepository, served_name

log = logging.getLogger("modelfleet.server")


class AliasWatcher:
    def __init__(
        self,
        repository: ModelRepository,
        source: RegistrySource,
        models: list[ModelConfig],
        interval_s: float,
    ) -> None:
        self._repository = repository
        self._source = source
        self._watched = [config for config in models if follows_alias(config)]
        self._interval_s = interval_s
        self._failed: dict[str, str] = {}  # model name → version that failed to load
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._watched and self._interval_s > 0:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="alias-watch")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval_s)
            await self.check_once()

    async def check_once(self) -> None:
        for config in self._watched:
            name = served_name(config)
            assert name is not None and config.ref is not None
            try:
                serving = self._repository.current_version(name)
                wanted = await asyncio.to_thread(self._source.current_version, config.ref)
            except (NotFound, Unavailable):
                continue  # not loaded yet (or lazy and not loaded now), or the alias was removed: keep what serves
            except ModelfleetError as exc:
                log.warning("checking %s failed: %s", config.ref, exc.message)
                continue
            if wanted == serving or self._failed.get(name) == wanted:
                continue
            await self._switch(config, name, serving, wanted)

    async def _switch(self, config: ModelConfig, name: str, serving: str, wanted: str) -> None:
        log.warning("%s moved: loading %s version %s beside version %s", config.ref, name, wanted, serving)
        repository = self._repository
        pinned = pinned_config(config, wanted)
        lazy = repository.is_lazy(name)
        try:
            if lazy:  # registered to load on demand in place of the old one (pinned: loaded now)
                await repository.add(pinned)
            if not lazy or (repository.is_loaded(name, serving) and not repository.is_loaded(name, wanted)):
                await repository.load(pinned)
        except ModelfleetError as exc:
            self._failed[name] = wanted
            if lazy:
                await repository.unload(name, wanted)  # the old registration keeps serving
            if repository.is_loaded(name, serving):
                repository.note(name, serving, f"update to version {wanted} failed: {exc.message}")
            log.error(
                "%s version %s did not load; version %s keeps serving: %s", name, wanted, serving, exc.message
            )
            return
        self._failed.pop(name, None)
        if repository.is_loaded(name, wanted):
            repository.set_default(name, wanted)
        await repository.unload(name, serving)
        log.warning("%s now serves version %s", name, wanted)
