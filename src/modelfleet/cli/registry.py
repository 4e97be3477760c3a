"""`modelfleet registry ...`: register, alias, promote, roll back, verify, sign, export and import models.

Every command wraps one `modelfleet.registry.Registry` method. The registry itself records every write
in its audit log (`<root>/audit.jsonl` unless --audit-log or MODELFLEET_AUDIT_LOG says otherwise).
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from modelfleet.cli.common import Actor, actor_name, console, err_console, print_json
from modelfleet.config.serve import DEFAULT_REGISTRY_ROOT, REGISTRY_ENV, registry_root
from modelfleet.errors import Conflict, IntegrityError, InvalidInput, NotFound

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    from modelfleet.registry import AliasEvent, ModelVersion, Registry

# Library imports happen inside commands so `modelfleet --help` does not load cryptography and SQLite.
ENCRYPTION_KEY_BYTES = 32
KEY_FILE_ENV = "MODELFLEET_REGISTRY_KEY_FILE"
KEY_ENV = "MODELFLEET_REGISTRY_KEY"

registry_app = typer.Typer(
    name="registry",
    help="Versioned model registry: lineage, aliases, promotion and rollback, integrity, signing, backup.",
    no_args_is_help=True,
)

Root = Annotated[
    Path | None,
    typer.Option(
        "--root",
        envvar=REGISTRY_ENV,
        help=f"Registry folder [default: {DEFAULT_REGISTRY_ROOT}].",
        show_default=False,
    ),
]
KeyFile = Annotated[
    Path | None,
    typer.Option(
        "--encryption-key-file",
        envvar=KEY_FILE_ENV,
        help=f"File with the registry's AES-256 key (base64 or raw {ENCRYPTION_KEY_BYTES} bytes); or set {KEY_ENV}.",
    ),
]
AuditPath = Annotated[
    Path | None,
    typer.Option(
        "--audit-log",
        envvar="MODELFLEET_AUDIT_LOG",
        help="Audit log (JSON lines) [default: <root>/audit.jsonl].",
    ),
]
Json = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
TrustedKeys = Annotated[
    list[Path] | None,
    typer.Option(
        "--trusted-key", help="PEM Ed25519 public key to trust; repeat for several. Requires a signature."
    ),
]


def register(app: typer.Typer) -> None:
    app.add_typer(registry_app, name="registry")


# ----- shared plumbing ---------------------------------------------------------------------------------


def read_encryption_key(key_file: Path | None) -> bytes | None:
    """The key from ``key_file``, else from $MODELFLEET_REGISTRY_KEY (base64), else None (no encryption)."""
    from modelfleet.registry.keyfile import decode_encryption_key, read_encryption_key_file

    if key_file is not None:
        return read_encryption_key_file(key_file)
    text = os.environ.get(KEY_ENV)
    return None if not text else decode_encryption_key(text.strip().encode(), KEY_ENV)


def _open(
    root: Path | None, key_file: Path | None, create: bool = True, audit_log: Path | None = None
) -> Registry:
    from modelfleet.registry import Registry
    from modelfleet.security.audit import AuditLog

    audit = AuditLog(audit_log) if audit_log is not None else None
    return Registry(registry_root(root), read_encryption_key(key_file), create=create, audit=audit)


def _trusted(paths: list[Path] | None) -> list[Ed25519PublicKey] | None:
    from modelfleet.registry import load_public_key

    return None if not paths else [load_public_key(p) for p in paths]


@contextmanager
def _progress(text: str) -> Iterator[Callable[[str], None]]:
    with err_console.status(text) as status:
        yield lambda message: status.update(message)


def _print_version(version: ModelVersion) -> None:
    lineage = version.lineage
    aliases = ", ".join(version.aliases) or "-"
    signed = ", ".join(s.key_id for s in version.signatures) or "no"
    console.print(
        f"[bold]{version.ref}[/]  registered {version.created_at} by {version.actor}\n"
        f"  aliases: {aliases}   signed: {signed}   size: {version.size_bytes:,} bytes\n"
        f"  manifest sha256: {version.manifest_sha256}\n"
        f"  source: {lineage.source.kind} {lineage.source.path} (sha256 {lineage.source.sha256[:12]}…)"
        + (f" uri {lineage.source_uri}" if lineage.source_uri else "")
        + f"\n  parent: {lineage.parent_version or '-'}   training data: {lineage.training_data_sha256 or '-'}",
        highlight=False,
        soft_wrap=True,
    )
    if lineage.training_params:
        console.print(
            f"  training params: {json.dumps(lineage.training_params, sort_keys=True)}", highlight=False
        )
    if lineage.retraining is not None:
        from modelfleet.cli.retrain import print_retraining_lineage

        print_retraining_lineage(version)
    for check in lineage.verification:
        console.print(
            f"  verification: {check.get('metric')} = {check.get('value')} (threshold {check.get('threshold')}, "
            f"{'passed' if check.get('passed') else 'FAILED'})",
            highlight=False,
        )
    table = Table(title="files")
    for column in ("path", "sha256", "bytes"):
        table.add_column(column)
    for entry in version.files:
        table.add_row(entry.path, entry.sha256, f"{entry.size_bytes:,}")
    console.print(table)


def _parse_params(params: list[str], params_file: Path | None) -> dict[str, object]:
    values: dict[str, object] = {}
    if params_file is not None:
        if not params_file.is_file():
            raise NotFound(f"params file {params_file} does not exist")
        try:
            loaded = json.loads(params_file.read_text(encoding="utf-8"))
        except ValueError:
            raise InvalidInput(f"{params_file} is not valid JSON") from None
        if not isinstance(loaded, dict):
            raise InvalidInput(f"{params_file} must hold a JSON object of parameters")
        values.update(loaded)
    for item in params:
        name, sep, raw = item.partition("=")
        if not sep or not name:
            raise InvalidInput(f"--param {item!r} is not NAME=VALUE")
        try:
            values[name] = json.loads(raw)
        except ValueError:
            values[name] = raw
    return values


# ----- commands ----------------------------------------------------------------------------------------


@registry_app.command("add")
def add_command(
    artifact_dir: Annotated[Path, typer.Argument(help="Artifact folder (model.onnx, manifest.json, ...).")],
    name: Annotated[str | None, typer.Option(help="Model name [default: the manifest's name].")] = None,
    source_uri: Annotated[
        str | None, typer.Option(help="Where the source lives (git URL, bucket URI).")
    ] = None,
    training_data: Annotated[
        Path | None, typer.Option(help="Training data file or folder to hash into the lineage.")
    ] = None,
    training_data_sha256: Annotated[
        str | None, typer.Option(help="Training data hash, if you have it already.")
    ] = None,
    training_data_uri: Annotated[str | None, typer.Option(help="Where the training data lives.")] = None,
    param: Annotated[
        list[str] | None, typer.Option(help="Training parameter NAME=VALUE (JSON values allowed); repeat.")
    ] = None,
    params_file: Annotated[Path | None, typer.Option(help="JSON object of training parameters.")] = None,
    parent: Annotated[
        int | None, typer.Option(help="Version of the same model this one derives from.")
    ] = None,
    root: Root = None,
    encryption_key_file: KeyFile = None,
    audit_log: AuditPath = None,
    actor: Actor = None,
    as_json: Json = False,
) -> None:
    """Register an artifact as the model's next version (every file verified against its manifest)."""
    if training_data is not None and training_data_sha256 is not None:
        raise InvalidInput("give --training-data or --training-data-sha256, not both")
    from modelfleet.registry import digest_path

    data_sha256 = digest_path(training_data) if training_data is not None else training_data_sha256
    registry = _open(root, encryption_key_file, audit_log=audit_log)
    who = actor_name(actor)
    with _progress(f"registering {artifact_dir}") as progress:
        version = registry.add(
            artifact_dir,
            actor=who,
            name=name,
            source_uri=source_uri,
            training_data_sha256=data_sha256,
            training_data_uri=training_data_uri,
            training_params=_parse_params(param or [], params_file),
            parent_version=parent,
            progress=progress,
        )
    if as_json:
        print_json(version.model_dump(mode="json"))
    else:
        console.print(
            f"registered [bold]{version.ref}[/] ({len(version.files)} files, {version.size_bytes:,} bytes)",
            highlight=False,
        )


@registry_app.command("list")
def list_command(
    name: Annotated[
        str | None, typer.Argument(help="Model name: list its versions instead of all models.")
    ] = None,
    root: Root = None,
    encryption_key_file: KeyFile = None,
    as_json: Json = False,
) -> None:
    """List models (or one model's versions)."""
    registry = _open(root, encryption_key_file, create=False)
    if name is None:
        models = registry.list_models()
        if as_json:
            print_json([m.model_dump(mode="json") for m in models])
            return
        table = Table(title=f"models in {registry.root}")
        for column in ("model", "latest", "versions", "aliases", "updated"):
            table.add_column(column)
        for m in models:
            aliases = ", ".join(f"{a}→{v}" for a, v in m.aliases.items()) or "-"
            table.add_row(m.name, str(m.latest_version), str(m.version_count), aliases, m.updated_at)
        console.print(table)
        return
    versions = registry.list_versions(name)
    if as_json:
        print_json([v.model_dump(mode="json") for v in versions])
        return
    table = Table(title=f"versions of {name}")
    for column in ("version", "registered", "by", "bytes", "aliases", "signed", "parent"):
        table.add_column(column)
    for v in versions:
        table.add_row(
            str(v.version),
            v.created_at,
            v.actor,
            f"{v.size_bytes:,}",
            ", ".join(v.aliases) or "-",
            "yes" if v.signatures else "no",
            str(v.lineage.parent_version or "-"),
        )
    console.print(table)


@registry_app.command("show")
def show_command(
    ref: Annotated[str, typer.Argument(help="NAME (latest), NAME:VERSION or NAME@ALIAS.")],
    root: Root = None,
    encryption_key_file: KeyFile = None,
    as_json: Json = False,
) -> None:
    """Show one version: files, hashes, lineage, aliases, signatures."""
    version = _open(root, encryption_key_file, create=False).get(ref)
    if as_json:
        print_json(version.model_dump(mode="json"))
    else:
        _print_version(version)


@registry_app.command("alias")
def alias_command(
    ref: Annotated[
        str, typer.Argument(help="Version to point at: NAME:VERSION, NAME@ALIAS or NAME (latest).")
    ],
    alias: Annotated[str, typer.Argument(help="Alias name, e.g. staging.")],
    reason: Annotated[str, typer.Option(help="Why (kept in the history).")] = "",
    root: Root = None,
    encryption_key_file: KeyFile = None,
    audit_log: AuditPath = None,
    actor: Actor = None,
    as_json: Json = False,
) -> None:
    """Point an alias at a version."""
    who = actor_name(actor)
    registry = _open(root, encryption_key_file, create=False, audit_log=audit_log)
    _print_event(registry.alias(ref, alias, actor=who, reason=reason), as_json)


@registry_app.command("promote")
def promote_command(
    ref: Annotated[str, typer.Argument(help="Version to promote: NAME:VERSION or NAME@staging.")],
    reason: Annotated[str, typer.Option(help="Why (required; kept in the history).")],
    to: Annotated[str, typer.Option("--to", help="Alias to move.")] = "production",
    root: Root = None,
    encryption_key_file: KeyFile = None,
    audit_log: AuditPath = None,
    actor: Actor = None,
    as_json: Json = False,
) -> None:
    """Point an alias (production by default) at a version; the one it replaces stays registered."""
    registry = _open(root, encryption_key_file, create=False, audit_log=audit_log)
    _print_event(registry.promote(ref, alias=to, actor=actor_name(actor), reason=reason), as_json)


@registry_app.command("rollback")
def rollback_command(
    name: Annotated[str, typer.Argument(help="Model name.")],
    reason: Annotated[str, typer.Option(help="Why (required; kept in the history).")],
    alias: Annotated[str, typer.Option(help="Alias to move back.")] = "production",
    to: Annotated[
        int | None, typer.Option("--to", help="Version to go to [default: the one before].")
    ] = None,
    root: Root = None,
    encryption_key_file: KeyFile = None,
    audit_log: AuditPath = None,
    actor: Actor = None,
    as_json: Json = False,
) -> None:
    """Move an alias back to the version it pointed at before its last promotion."""
    registry = _open(root, encryption_key_file, create=False, audit_log=audit_log)
    event = registry.rollback(name, alias=alias, to_version=to, actor=actor_name(actor), reason=reason)
    _print_event(event, as_json)


def _print_event(event: AliasEvent, as_json: bool) -> None:
    if as_json:
        print_json(event.model_dump(mode="json"))
        return
    before = "nothing" if event.from_version is None else f"version {event.from_version}"
    console.print(
        f"{event.name}@{event.alias}: {before} → version {event.to_version} ({event.action})", highlight=False
    )


@registry_app.command("history")
def history_command(
    name: Annotated[str, typer.Argument(help="Model name.")],
    alias: Annotated[str | None, typer.Option(help="Only this alias.")] = None,
    root: Root = None,
    encryption_key_file: KeyFile = None,
    as_json: Json = False,
) -> None:
    """Every move of a model's aliases (who, when, from, to, why), then its retraining runs and their steps."""
    registry = _open(root, encryption_key_file, create=False)
    events = registry.history(name, alias)
    if as_json:
        print_json([e.model_dump(mode="json") for e in events])
        return
    table = Table(title=f"alias history of {name}")
    for column in ("#", "at", "alias", "action", "from", "to", "by", "reason"):
        table.add_column(column)
    for e in events:
        table.add_row(
            str(e.id),
            e.at,
            e.alias,
            e.action,
            str(e.from_version or "-"),
            str(e.to_version),
            e.actor,
            e.reason,
        )
    console.print(table)
    from modelfleet.cli.retrain import print_retraining

    print_retraining(registry, name)


@registry_app.command("rollouts")
def rollouts_command(
    name: Annotated[str, typer.Argument(help="Model name.")],
    root: Root = None,
    encryption_key_file: KeyFile = None,
    as_json: Json = False,
) -> None:
    """Every rollout of a model through a fleet (`fleet rollout`): who, from, to, steps, outcome, timings."""
    from modelfleet.registry.rollouts import rollouts

    records = rollouts(_open(root, encryption_key_file, create=False), name)
    if as_json:
        print_json([r.model_dump(mode="json") for r in records])
        return
    table = Table(title=f"rollouts of {name}")
    for column in ("id", "started", "fleet", "from", "to", "steps %", "outcome", "s", "by", "reason"):
        table.add_column(column, overflow="fold")
    for r in records:
        steps = ",".join(f"{step.canary_percent:g}" for step in r.steps)
        table.add_row(
            r.id, r.started_at, r.fleet, str(r.from_version), str(r.to_version), steps,
            r.outcome, f"{r.duration_s:g}", r.actor, r.reason,
        )  # fmt: skip
    console.print(table)


@registry_app.command("verify")
def verify_command(
    ref: Annotated[
        str | None, typer.Argument(help="NAME (all its versions), NAME:VERSION, NAME@ALIAS [default: all].")
    ] = None,
    trusted_key: TrustedKeys = None,
    root: Root = None,
    encryption_key_file: KeyFile = None,
    as_json: Json = False,
) -> None:
    """Read and hash every blob; exit 4 if any is missing or corrupt (or a required signature is absent)."""
    registry = _open(root, encryption_key_file, create=False)
    trusted = _trusted(trusted_key)
    with _progress("verifying") as progress:
        report = registry.verify(ref, trusted_keys=trusted, progress=progress)
    if as_json:
        print_json(report.model_dump(mode="json") | {"ok": report.ok})
    else:
        console.print(
            f"checked {report.checked_versions} versions, {report.checked_blobs} blobs, {report.checked_bytes:,} bytes; "
            f"{report.orphan_blobs} unreferenced blobs, {report.temp_files} temp files",
            highlight=False,
        )
        for problem in report.problems:
            console.print(
                f"[red]{problem.problem}[/]: {', '.join(problem.used_by)} ({problem.detail})", highlight=False
            )
        for text in report.signature_problems + report.index_problems:
            console.print(f"[red]problem[/]: {text}", highlight=False)
    if not report.ok:
        count = len(report.problems) + len(report.signature_problems) + len(report.index_problems)
        raise IntegrityError(f"registry verification found {count} problem(s)")
    if not as_json:
        console.print("[green]ok[/]")


@registry_app.command("gc")
def gc_command(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only count what would go.")] = False,
    root: Root = None,
    encryption_key_file: KeyFile = None,
    audit_log: AuditPath = None,
    actor: Actor = None,
    as_json: Json = False,
) -> None:
    """Remove blobs no version uses and leftovers of interrupted writes (never a referenced blob)."""
    registry = _open(root, encryption_key_file, create=False, audit_log=audit_log)
    report = registry.gc(dry_run=dry_run, actor=actor_name(actor))
    if as_json:
        print_json(report.model_dump(mode="json"))
    else:
        verb = "would remove" if dry_run else "removed"
        console.print(
            f"{verb} {report.removed_blobs} blobs and {report.removed_temp_files} temp files "
            f"({report.freed_bytes:,} bytes)",
            highlight=False,
        )


@registry_app.command("export")
def export_command(
    out: Annotated[Path, typer.Option("--out", help="Bundle file to write (.tar, or .tar.gz to compress).")],
    ref: Annotated[
        str | None, typer.Argument(help="NAME:VERSION (one), NAME (whole model) [default: everything].")
    ] = None,
    root: Root = None,
    encryption_key_file: KeyFile = None,
    audit_log: AuditPath = None,
    actor: Actor = None,
    as_json: Json = False,
) -> None:
    """Write a self-describing bundle (plaintext: protect it like the models themselves)."""
    registry = _open(root, encryption_key_file, create=False, audit_log=audit_log)
    with _progress("exporting") as progress:
        report = registry.export_bundle(out, ref, progress=progress, actor=actor_name(actor))
    if as_json:
        print_json(report.model_dump(mode="json"))
    else:
        console.print(
            f"wrote {report.path}: {len(report.versions)} versions, {report.blobs} blobs, "
            f"{report.size_bytes:,} bytes",
            highlight=False,
        )


@registry_app.command("import")
def import_command(
    bundle: Annotated[Path, typer.Argument(help="Bundle written by `registry export`.")],
    root: Root = None,
    encryption_key_file: KeyFile = None,
    audit_log: AuditPath = None,
    actor: Actor = None,
    as_json: Json = False,
) -> None:
    """Restore a bundle with identical hashes and version numbers (every blob verified)."""
    registry = _open(root, encryption_key_file, audit_log=audit_log)
    with _progress(f"importing {bundle}") as progress:
        report = registry.import_bundle(bundle, progress=progress, actor=actor_name(actor))
    if as_json:
        print_json(report.model_dump(mode="json"))
        return
    console.print(
        f"added {len(report.versions_added)} versions ({', '.join(report.versions_added) or '-'}); "
        f"{len(report.versions_present)} already present; {report.blobs_written} blobs written",
        highlight=False,
    )
    if report.aliases_kept:
        err_console.print(
            f"kept existing aliases that differ from the bundle: {', '.join(report.aliases_kept)}"
        )


@registry_app.command("sign")
def sign_command(
    ref: Annotated[str, typer.Argument(help="Version to sign.")],
    key: Annotated[Path, typer.Option("--key", help="PEM Ed25519 private key (see gen-signing-key).")],
    root: Root = None,
    encryption_key_file: KeyFile = None,
    audit_log: AuditPath = None,
    actor: Actor = None,
    as_json: Json = False,
) -> None:
    """Sign a version's name, number and file hashes with Ed25519."""
    registry = _open(root, encryption_key_file, create=False, audit_log=audit_log)
    version = registry.get(ref)
    from modelfleet.registry import load_private_key

    record = registry.sign(version.ref, load_private_key(key), actor=actor_name(actor))
    if as_json:
        print_json(record.model_dump(mode="json"))
    else:
        console.print(f"signed {version.ref} with key {record.key_id}", highlight=False)


@registry_app.command("checkout")
def checkout_command(
    ref: Annotated[str, typer.Argument(help="NAME, NAME:VERSION or NAME@ALIAS.")],
    out: Annotated[Path, typer.Option("--out", help="Empty (or missing) folder to write the files into.")],
    trusted_key: TrustedKeys = None,
    root: Root = None,
    encryption_key_file: KeyFile = None,
) -> None:
    """Write a version's files to a folder, verifying every sha256 (and a signature with --trusted-key)."""
    registry = _open(root, encryption_key_file, create=False)
    trusted = _trusted(trusted_key)
    path = registry.materialize(ref, out, trusted_keys=trusted)
    console.print(f"{registry.get(ref).ref} → {path}", highlight=False)


@registry_app.command("gen-signing-key")
def gen_signing_key_command(
    private: Annotated[Path, typer.Option("--private", help="Where to write the private key (mode 0600).")],
    public: Annotated[
        Path, typer.Option("--public", help="Where to write the public key (give this to servers).")
    ],
) -> None:
    """Make an Ed25519 key pair for signing versions."""
    from modelfleet.registry import generate_signing_key

    key_id = generate_signing_key(private, public)
    console.print(f"wrote {private} and {public} (key id {key_id})", highlight=False)


@registry_app.command("gen-encryption-key")
def gen_encryption_key_command(
    out: Annotated[Path, typer.Argument(help="File to write (mode 0600); refuses to overwrite.")],
) -> None:
    """Make a random AES-256 key for encrypting a registry at rest."""
    if out.exists():
        raise Conflict(f"{out} already exists; refusing to overwrite a key")
    out.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(base64.b64encode(os.urandom(ENCRYPTION_KEY_BYTES)) + b"\n")
    console.print(
        f"wrote {out}; keep it apart from the registry (a copied store is useless without it)",
        highlight=False,
    )
