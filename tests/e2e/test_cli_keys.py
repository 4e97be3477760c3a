"""`modelfleet keys ...` in a subprocess: a key is printed once and appears nowhere else."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from modelfleet.errors import Unauthorized
from modelfleet.security.auth import Authenticator
from modelfleet.security.keys import KEY_PATTERN


def _run(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELFLEET_")}
    env |= {"HOME": str(home), "MODELFLEET_ACTOR": "admin-ana", "COLUMNS": "200"}
    result = subprocess.run(
        [sys.executable, "-m", "modelfleet.cli.main", "keys", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert "Traceback" not in result.stderr, result.stderr
    return result


def test_key_is_shown_once_and_never_again(tmp_path: Path) -> None:
    created = _run(tmp_path, "create", "--name", "search", "--scope", "infer:bert-*", "--scope", "read")
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip()
    assert KEY_PATTERN.match(key) and created.stdout == key + "\n"  # stdout is just the key: KEY=$(...) works
    assert "only time it is shown" in created.stderr and key not in created.stderr
    key_id = key[3:11]
    secret = key[12:]

    as_json = _run(
        tmp_path, "create", "--name", "ops", "--scope", "admin", "--expires-in-days", "7", "--json"
    )
    other = json.loads(as_json.stdout)
    assert KEY_PATTERN.match(other["api_key"]) and other["scopes"] == ["admin"] and other["expires_at"]
    assert "key_hash" not in other

    listing = _run(tmp_path, "list")
    listing_json = _run(tmp_path, "list", "--json")
    revoke = _run(tmp_path, "revoke", f"mf_{key_id}_…", "--reason", "rotating")
    revoke_again = _run(tmp_path, "revoke", key, "--json")  # a whole key pasted by mistake is not echoed
    assert revoke.returncode == 0 and f"revoked key {key_id} (search)" in revoke.stdout
    assert revoke_again.returncode == 6 and "already revoked" in revoke_again.stderr

    records = json.loads(listing_json.stdout)
    assert [(r["name"], r["status"]) for r in records] == [("search", "active"), ("ops", "active")]
    assert all("key_hash" not in r for r in records)
    assert f"mf_{key_id}_…" in listing.stdout and "search" in listing.stdout
    statuses = {r["name"]: r["status"] for r in json.loads(_run(tmp_path, "list", "--json").stdout)}
    assert statuses == {"search": "revoked", "ops": "active"}

    keys_file = tmp_path / ".modelfleet" / "keys.json"
    audit_file = tmp_path / ".modelfleet" / "audit.jsonl"
    texts = {
        "keys file": keys_file.read_text(),
        "audit log": audit_file.read_text(),
        "list": listing.stdout + listing.stderr,
        "list --json": listing_json.stdout + listing_json.stderr,
        "revoke": revoke.stdout + revoke.stderr + revoke_again.stdout + revoke_again.stderr,
    }
    for where, text in texts.items():
        for secret_text in (key, secret, other["api_key"], other["api_key"][12:]):
            assert secret_text not in text, f"a key leaked into the {where}"
    events = [json.loads(line) for line in texts["audit log"].splitlines()]
    assert [e["event"] for e in events] == ["keys.create", "keys.create", "keys.revoke"]
    assert events[2] == {**events[2], "key_id": key_id, "actor": "admin-ana", "reason": "rotating"}

    # The store the CLI wrote is what a server loads: the revoked key fails, the other works.
    auth = Authenticator.from_keys_file(keys_file)
    with pytest.raises(Unauthorized):
        auth.authorize(f"Bearer {key}", "read")
    assert auth.authorize(f"Bearer {other['api_key']}", "admin").name == "ops"


def test_bad_input_and_missing_keys(tmp_path: Path) -> None:
    bad_scope = _run(tmp_path, "create", "--name", "x", "--scope", "write")
    assert bad_scope.returncode == 2 and "scope 'write' is not valid" in bad_scope.stderr
    unknown = _run(tmp_path, "revoke", "zzzzzzzz")
    assert unknown.returncode == 3 and "no API key with id 'zzzzzzzz'" in unknown.stderr


def test_tls_cert_command_writes_a_usable_pair(tmp_path: Path) -> None:
    result = _run(
        tmp_path,
        "tls-cert",
        "--cert",
        str(tmp_path / "c.pem"),
        "--key",
        str(tmp_path / "k.pem"),
        "--host",
        "localhost",
    )
    assert result.returncode == 0, result.stderr
    from modelfleet.security.tls import server_ssl_context

    server_ssl_context(tmp_path / "c.pem", tmp_path / "k.pem")
    again = _run(tmp_path, "tls-cert", "--cert", str(tmp_path / "c.pem"), "--key", str(tmp_path / "k.pem"))
    assert again.returncode == 6
