"""The sources of a serve spec merged into one `ServeSpec`: the rules `modelfleet serve` and library users share.

Every `serve` option is defined once, in `SERVE_OPTIONS`: its flag, its environment variable
(``MODELFLEET_<KEY>``) and the spec field it sets, whose description and default are the flag's help text
and shown default. Precedence, per option: flag > environment variable > spec file > field default.
Made like `bench run`'s options (`modelfleet.config.bench.BENCH_OPTIONS`, `bench.options.spec_from_sources`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from modelfleet.config.base import (
    OptionKind,
    OptionScalar,
    coerce_option_value,
    load_spec,
    parse_option_text,
    parse_spec,
)
from modelfleet.config.serve import (
    AuthConfig,
    BatchingConfig,
    ModelConfig,
    RegistryConfig,
    ServerConfig,
    ServeSpec,
    registry_root,
)
from modelfleet.errors import InvalidInput
from modelfleet.manifest import read_manifest

ENV_PREFIX = "MODELFLEET_"
SPEC_FILE_ENV = "MODELFLEET_SERVE_SPEC"

# The spec section each option's field lives in; `batching` is every model's batching.
_SECTIONS: dict[str, type[BaseModel]] = {
    "server": ServerConfig,
    "batching": BatchingConfig,
    "registry": RegistryConfig,
    "auth": AuthConfig,
}


@dataclass(frozen=True, slots=True)
class ServeOption:
    """One `serve` option: its flag, its environment variable and the spec field (``section.name``) it sets."""

    key: str  # its name in `serve_spec_from_sources(flags=...)`; upper case, MODELFLEET_<KEY>
    field: str  # e.g. "server.port"; "batching.*" sets the field on every model
    kind: OptionKind
    flags: tuple[str, ...] = ()  # none: --key with dashes
    note: str = ""

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.key.upper()

    @property
    def flag_names(self) -> tuple[str, ...]:
        return self.flags or ("--" + self.key.replace("_", "-"),)

    @property
    def section(self) -> str:
        return self.field.split(".", 1)[0]

    @property
    def name(self) -> str:
        return self.field.split(".", 1)[1]

    @property
    def spec_field(self) -> FieldInfo:
        return _SECTIONS[self.section].model_fields[self.name]

    @property
    def help(self) -> str:
        description = self.spec_field.description or ""
        return f"{description} {self.note}" if self.note else description

    @property
    def default_text(self) -> str | None:
        """The field default as --help shows it; None where there is none to show (unset, a switch)."""
        value = self.spec_field.default
        if value is None or isinstance(value, bool):
            return None
        return str(value)


_EVERY_MODEL = "Applies to every model, over the spec file's value."

SERVE_OPTIONS: tuple[ServeOption, ...] = (
    ServeOption("host", "server.host", str),
    ServeOption("port", "server.port", int, note="--port-file writes the one chosen."),
    ServeOption("grpc_port", "server.grpc_port", int, note="--grpc-port-file writes the one chosen."),
    ServeOption("workers", "server.workers", int),
    ServeOption("max_batch_size", "batching.max_batch_size", int, note=_EVERY_MODEL),
    ServeOption("max_delay_s", "batching.max_delay_s", float, note=_EVERY_MODEL),
    ServeOption(
        "dispatch_when_idle",
        "batching.dispatch_when_idle",
        bool,
        ("--dispatch-when-idle/--no-dispatch-when-idle",),
        note=_EVERY_MODEL,
    ),
    ServeOption("max_queue_items", "batching.max_queue_items", int, note=_EVERY_MODEL),
    ServeOption("tls_cert", "server.tls_cert_file", Path),
    ServeOption("tls_key", "server.tls_key_file", Path),
    ServeOption(
        "registry",
        "registry.root",
        Path,
        note="Read only when a model is a registry reference (--ref, `ref:`).",
    ),
    ServeOption("audit_log", "auth.audit_log", Path),
)

_BY_KEY = {option.key: option for option in SERVE_OPTIONS}


def serve_spec_from_sources(
    spec_file: Path | None = None,
    models: Sequence[Path] = (),
    refs: Sequence[str] = (),
    flags: Mapping[str, object] | None = None,
    env: Mapping[str, str] | None = None,
) -> ServeSpec:
    """The serve spec that a spec file, artifact folders, registry references, variables and flags describe.

    `models` (artifact folders) and `refs` (``NAME``, ``NAME:VERSION``, ``NAME@ALIAS``) are added to the
    file's models. `flags` maps option keys (`ServeOption.key`, e.g. ``"port"``, ``"max_batch_size"``) to
    values, typed or as text; None means not given. `env` is usually ``os.environ``; only the options'
    ``MODELFLEET_<KEY>`` variables are read (none when it is None). A registry reference with no registry
    folder from a flag, variable or the file uses `registry_root()`'s default. Every artifact folder is
    checked to hold a readable manifest, so a typo fails before a port is bound. Raises `InvalidInput`
    (nothing to serve, a bad option), `SpecError` (a spec that does not validate) or `NotFound`.
    """
    given = _given(flags or {}, env or {})
    if spec_file is not None:
        data: dict[str, Any] = load_spec(spec_file, ServeSpec).model_dump()
    elif models or refs:
        data = {"server": {}, "models": []}
    else:
        raise InvalidInput("give a serve spec (--spec FILE), --model ARTIFACT_DIR or --ref NAME@ALIAS")
    data["models"] = (
        list(data["models"])
        + [ModelConfig(path=path.resolve()).model_dump() for path in models]
        + [ModelConfig(ref=ref).model_dump() for ref in refs]
    )
    batching: dict[str, OptionScalar] = {}
    for key, value in given.items():
        option = _BY_KEY[key]
        if option.section == "batching":
            batching[option.name] = value
        elif option.section != "registry":
            data.setdefault(option.section, {})[option.name] = value
    for model in data["models"]:
        model["batching"] = {**model["batching"], **batching}
    if any(model.get("ref") for model in data["models"]):
        registry = data.setdefault("registry", {})
        chosen = given.get("registry")
        if chosen is not None or registry.get("root") is None:
            registry["root"] = registry_root(Path(str(chosen)) if chosen is not None else None, env={})
    spec = parse_spec(data, ServeSpec, str(spec_file or "command line"))
    for entry in spec.models:
        if entry.path is not None:
            read_manifest(entry.path)
    return spec


def _given(flags: Mapping[str, object], env: Mapping[str, str]) -> dict[str, OptionScalar]:
    """Option values by key, a flag winning over its environment variable (an empty variable is unset)."""
    unknown = sorted(set(flags) - set(_BY_KEY))
    if unknown:
        raise InvalidInput(f"unknown serve options {unknown}; known: {sorted(_BY_KEY)}")
    given: dict[str, OptionScalar] = {}
    for option in SERVE_OPTIONS:
        flag = flags.get(option.key)
        if flag is not None:
            given[option.key] = coerce_option_value(option.kind, flag, option.flag_names[0])
        elif env.get(option.env):
            given[option.key] = parse_option_text(option.kind, env[option.env], option.env)
    return given
