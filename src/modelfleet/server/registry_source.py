"""Serving from the registry: resolve `name@alias` / `name:version` to a verified checkout."""

from __future__ import annotations

from pathlib import Path

from modelfleet.config.serve import ModelConfig, RegistryConfig
from modelfleet.errors import InvalidInput
from modelfleet.types import ModelRef


class RegistrySource:
    def __init__(self, config: RegistryConfig) -> None:
        from modelfleet.registry import Registry
        from modelfleet.registry.keyfile import read_encryption_key_file
        from modelfleet.registry.signing import load_public_key

        if config.root is None:
            raise InvalidInput(
                "a `ref:` model needs registry.root in the serve spec (or $MODELFLEET_REGISTRY)"
            )
        key = read_encryption_key_file(config.encryption_key_file) if config.encryption_key_file else None
        self._registry = Registry(config.root, key, create=False)
        # An empty list means "no signature needed"; any key listed makes a valid signature mandatory.
        self._trusted = [load_public_key(path) for path in config.trusted_public_keys] or None

    def current_version(self, ref: str) -> str:
        return str(self._registry.get(ref).version)

    def resolve(self, config: ModelConfig) -> tuple[Path, str | None]:
        """The checkout folder (every file's sha256 verified, signature checked if required) and its version."""
        if config.path is not None:
            return config.path, None
        assert config.ref is not None
        version = self._registry.get(config.ref)
        pinned = f"{version.name}:{version.version}"
        return self._registry.materialize(pinned, trusted_keys=self._trusted), str(version.version)


def pinned_config(config: ModelConfig, version: str) -> ModelConfig:
    """The same model config pinned to one registry version (what a hot switch loads)."""
    assert config.ref is not None
    return config.model_copy(update={"ref": f"{ModelRef.parse(config.ref).name}:{version}"})


def follows_alias(config: ModelConfig) -> bool:
    """`name@alias` and bare `name` (latest) can move; `name:version` cannot."""
    return config.ref is not None and ModelRef.parse(config.ref).version is None
