"""What a valid fleet spec leaves open: open access, unpinned images, Secrets to create, unsized models.

Pure (no files, no cluster): `fleet validate`, `fleet up` and `fleet render` print these; a library user
gets the same notes from one call.
"""

from __future__ import annotations

from modelfleet.config.fleet import FleetSpec


def fleet_warnings(spec: FleetSpec, *, kubernetes: bool) -> list[str]:
    """One sentence per thing to check before running `spec` locally (`kubernetes=False`) or on a cluster."""
    notes = []
    if not spec.auth.enabled:
        notes.append(
            f"auth is off: anyone who can reach the router ({spec.router.host}) can call every model"
        )
    elif not kubernetes and spec.auth.keys_file is None:
        notes.append(
            "auth is on without auth.keys_file: `fleet up` needs a key store (modelfleet keys create)"
        )
    if kubernetes:
        notes += _kubernetes_warnings(spec)
    unsized = [m.name for m in spec.models if m.ref is not None and m.memory_mib is None]
    if unsized:
        notes.append(
            f"registry models without memory_mib are sized at a default estimate: {', '.join(unsized)}"
        )
    return notes


def _kubernetes_warnings(spec: FleetSpec) -> list[str]:
    notes = []
    if spec.image.digest is None:
        notes.append(
            f"image {spec.image.reference} is not pinned by digest; set image.digest for reproducible rollouts"
        )
    if spec.auth.enabled:
        secret = spec.auth.secret_name or f"{spec.name}-auth"
        notes.append(f"pods mount Secret {secret} (key `keys`); create it before applying")
        monitoring = spec.kubernetes.monitoring
        if monitoring.service_monitor and spec.auth.protect_metrics and monitoring.scrape_secret_name:
            notes.append(
                f"Prometheus reads a `read` API key from Secret {monitoring.scrape_secret_name} "
                f"(key `{monitoring.scrape_secret_key}`) in namespace {spec.kubernetes.namespace}; "
                "create it before applying"
            )
    return notes
