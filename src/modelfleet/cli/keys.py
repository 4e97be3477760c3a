"""`modelfleet keys ...`: create, list and revoke scoped API keys; make a self-signed TLS pair for dev.

A key is printed once, by `create`, on stdout (so `KEY=$(modelfleet keys create ...)` works); nothing else
ever prints or logs it. Admin actions go to the audit log (`audit.jsonl` beside the keys file by default).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from modelfleet.cli.common import Actor, actor_name, console, err_console, print_json

if TYPE_CHECKING:
    from modelfleet.security.keys import KeyStore

# Library imports happen inside commands so `modelfleet --help` does not load argon2 and cryptography.
DEFAULT_KEYS_FILE = Path("~") / ".modelfleet" / "keys.json"

keys_app = typer.Typer(
    name="keys", help="Scoped API keys for servers and routers; TLS helpers.", no_args_is_help=True
)

KeysFile = Annotated[
    Path | None,
    typer.Option(
        "--keys-file",
        envvar="MODELFLEET_KEYS_FILE",
        help=f"Key store (JSON, hashes only) [default: {DEFAULT_KEYS_FILE}].",
        show_default=False,
    ),
]
AuditPath = Annotated[
    Path | None,
    typer.Option(
        "--audit-log",
        envvar="MODELFLEET_AUDIT_LOG",
        help="Audit log [default: audit.jsonl beside the keys file].",
    ),
]
Json = Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")]


def register(app: typer.Typer) -> None:
    app.add_typer(keys_app, name="keys")


def _keys_path(keys_file: Path | None) -> Path:
    return (keys_file or DEFAULT_KEYS_FILE).expanduser()


def _store(keys_file: Path | None, audit_log: Path | None = None) -> KeyStore:
    """The key store; it audits its own writes (beside the keys file unless --audit-log says where)."""
    from modelfleet.security.audit import AuditLog
    from modelfleet.security.keys import KeyStore

    return KeyStore(_keys_path(keys_file), audit=AuditLog(audit_log) if audit_log is not None else None)


def _key_id(text: str) -> str:
    """Accept the id, ``mf_<id>``, the ``mf_<id>_…`` display form, or (pasted by mistake) a whole key."""
    from modelfleet.security.keys import KEY_ID_LENGTH, split_key

    whole = split_key(text)
    if whole is not None:
        return whole
    text = text.removeprefix("mf_")
    return text[:KEY_ID_LENGTH] if len(text) > KEY_ID_LENGTH and text[KEY_ID_LENGTH] == "_" else text


@keys_app.command("create")
def create_command(
    name: Annotated[str, typer.Option(help="What the key is for, e.g. ci or team-search.")],
    scope: Annotated[
        list[str], typer.Option(help="admin, read, or infer:<model or glob>; repeat for several.")
    ],
    expires_in_days: Annotated[float | None, typer.Option(help="Stop working after this many days.")] = None,
    keys_file: KeysFile = None,
    audit_log: AuditPath = None,
    actor: Actor = None,
    as_json: Json = False,
) -> None:
    """Create a key and print it once. Only its salted hash is stored."""
    who = actor_name(actor)
    store = _store(keys_file, audit_log)
    created = store.create(
        name, scope, actor=who, expires_in_s=None if expires_in_days is None else expires_in_days * 86_400
    )
    record = created.record
    if as_json:
        print_json({"api_key": created.key, **record.public()})
        return
    typer.echo(created.key)
    err_console.print(
        f"created key {record.key_id} ({record.name}) with scopes {', '.join(record.scopes)}"
        f"{'' if record.expires_at is None else f', expires {record.expires_at}'}. "
        "This is the only time it is shown: store it in your secret manager now.",
        highlight=False,
    )


@keys_app.command("list")
def list_command(keys_file: KeysFile = None, as_json: Json = False) -> None:
    """List keys by id, name, scopes and status (never the keys themselves)."""
    from modelfleet.security.keys import utc_now

    now = utc_now()
    path = _keys_path(keys_file)
    records = _store(keys_file).list_keys()
    if as_json:
        print_json([r.public(now) for r in records])
        return
    table = Table(title=f"API keys in {path}")
    for column in ("id", "name", "scopes", "status", "created", "by", "expires"):
        table.add_column(column)
    for r in records:
        table.add_row(
            f"mf_{r.key_id}_…",
            r.name,
            ", ".join(r.scopes),
            r.status(now),
            r.created_at,
            r.created_by,
            r.expires_at or "-",
        )
    console.print(table)


@keys_app.command("revoke")
def revoke_command(
    key_id: Annotated[
        str, typer.Argument(help="Key id as `keys list` shows it (e.g. ab12cd34 or mf_ab12cd34_…).")
    ],
    reason: Annotated[str, typer.Option(help="Why (kept with the key and in the audit log).")] = "",
    keys_file: KeysFile = None,
    audit_log: AuditPath = None,
    actor: Actor = None,
    as_json: Json = False,
) -> None:
    """Revoke a key. Running servers reject it within a second of the keys file changing."""
    who = actor_name(actor)
    record = _store(keys_file, audit_log).revoke(_key_id(key_id), actor=who, reason=reason)
    if as_json:
        print_json(record.public())
    else:
        console.print(f"revoked key {record.key_id} ({record.name})", highlight=False)


@keys_app.command("tls-cert")
def tls_cert_command(
    cert: Annotated[Path, typer.Option("--cert", help="Certificate file to write (PEM).")],
    key: Annotated[Path, typer.Option("--key", help="Private key file to write (PEM, mode 0600).")],
    host: Annotated[
        list[str] | None, typer.Option("--host", help="DNS name it is valid for; repeat.")
    ] = None,
    ip: Annotated[list[str] | None, typer.Option("--ip", help="IP address it is valid for; repeat.")] = None,
    days: Annotated[int, typer.Option(help="Days it stays valid.")] = 30,
) -> None:
    """Make a self-signed certificate and key for local development and tests (not for production)."""
    from modelfleet.security.tls import generate_self_signed

    generate_self_signed(
        cert, key, hostnames=host or ["localhost"], ip_addresses=ip or ["127.0.0.1", "::1"], valid_days=days
    )
    console.print(f"wrote {cert} and {key}; clients must trust {cert} explicitly", highlight=False)
