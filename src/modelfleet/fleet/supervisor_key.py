"""The supervisor's own API key, for what it reads from its fleet when auth is on.

The local alert rules scrape the router's `/metrics` (protected by default), the drift monitor reads each
replica's `/v2/models/NAME/drift` (always protected: it holds served data), and retraining's rollouts read the
router's `/fleet/status`: all need the `read` scope. The supervisor creates one key with that scope alone in
the fleet's key store when it starts and revokes it when it stops; a key left by a supervisor that was killed
is revoked by the next one, and expires on its own after `SUPERVISOR_KEY_LIFETIME_S` in any case.
The plaintext lives only in the supervisor's memory.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from modelfleet.security.keys import KeyStore

SUPERVISOR_KEY_LIFETIME_S = 30 * 24 * 3600.0


@dataclass(frozen=True, slots=True)
class SupervisorKey:
    keys_file: Path
    name: str
    key_id: str
    key: str  # the plaintext: only ever in this process's memory

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}

    def revoke(self) -> None:
        KeyStore(self.keys_file).revoke(self.key_id, actor=self.name, reason="the supervisor stopped")


def key_name(fleet: str) -> str:
    return f"modelfleet-supervisor:{fleet}"


def open_supervisor_key(keys_file: Path, fleet: str) -> SupervisorKey:
    """Revoke what an earlier supervisor of `fleet` left active, then create this one's key (scope `read`)."""
    store = KeyStore(keys_file)
    name = key_name(fleet)
    for record in store.list_keys():
        if record.name == name and record.revoked_at is None:
            store.revoke(record.key_id, actor=name, reason="a new supervisor of the fleet started")
    created = store.create(name, ["read"], actor=name, expires_in_s=SUPERVISOR_KEY_LIFETIME_S)
    return SupervisorKey(keys_file, name, created.record.key_id, created.key)
