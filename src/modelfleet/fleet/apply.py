"""Apply, diff and delete rendered fleet objects with the official `kubernetes` client.

Server-side apply (field manager ``modelfleet``) makes `apply` idempotent and lets other managers own
their fields (the HPA owns ``replicas``). `--dry-run` is the API server's own dry run (``dryRun=All``):
admission and validation run, nothing is stored. `diff` asks the server what an apply would produce
and compares it with the live object, as `kubectl diff` does. The kubeconfig is found the standard
way (``--kubeconfig``, ``$KUBECONFIG``, ``~/.kube/config``, or the in-cluster service account).
"""

from __future__ import annotations

import difflib
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from modelfleet.errors import (
    Conflict,
    Forbidden,
    InvalidInput,
    ModelfleetError,
    NotFound,
    Unauthorized,
    Unavailable,
)
from modelfleet.kubeobjects import KubeObject

FIELD_MANAGER = "modelfleet"
_CONNECT_TIMEOUT_S = 5.0
# Fields the server owns; comparing them would make every object look changed.
_SERVER_METADATA = ("managedFields", "resourceVersion", "generation", "uid", "creationTimestamp", "selfLink")


@dataclass(frozen=True, slots=True)
class ObjectResult:
    """What happened (or would happen) to one object."""

    kind: str
    name: str
    namespace: str | None
    action: str  # created | configured | unchanged | deleted | absent
    diff: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "name": self.name,
            "namespace": self.namespace,
            "action": self.action,
            "diff": self.diff,
        }


def connect(kubeconfig: Path | None = None, context: str | None = None) -> Any:
    """A DynamicClient for the configured cluster, or a one-line Unavailable error that says what to do."""
    try:
        from kubernetes import client as k8s_client
        from kubernetes import config as k8s_config
        from kubernetes import dynamic
        from kubernetes.config.config_exception import ConfigException
    except ImportError:  # pragma: no cover - a core dependency; only a broken install lands here
        raise Unavailable("the `kubernetes` package is not installed (pip install kubernetes)") from None

    configuration = k8s_client.Configuration()
    try:
        if kubeconfig is None and context is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
            k8s_config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        else:
            k8s_config.load_kube_config(  # type: ignore[no-untyped-call]
                config_file=str(kubeconfig) if kubeconfig is not None else None,
                context=context,
                client_configuration=configuration,
            )
    except (ConfigException, OSError, TypeError, ValueError) as exc:
        where = str(kubeconfig) if kubeconfig is not None else os.environ.get("KUBECONFIG", "~/.kube/config")
        raise Unavailable(
            f"no usable Kubernetes configuration ({where}): {exc}. Point --kubeconfig or KUBECONFIG at a cluster, "
            "e.g. `kind create cluster` or `aws eks update-kubeconfig --name CLUSTER`"
        ) from None
    _check_reachable(configuration.host)
    api_client = k8s_client.ApiClient(configuration)
    try:
        return dynamic.DynamicClient(api_client)  # type: ignore[no-untyped-call]
    except Exception as exc:
        raise _translate(exc, f"cluster at {configuration.host}") from None


def _check_reachable(host: str) -> None:
    """Fail in seconds, not minutes, when the API server is unreachable (the client retries for long)."""
    parts = urlsplit(host)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    if not parts.hostname:
        raise Unavailable(f"Kubernetes API address {host!r} has no host name")
    try:
        with socket.create_connection((parts.hostname, port), timeout=_CONNECT_TIMEOUT_S):
            pass
    except OSError as exc:
        raise Unavailable(
            f"cannot reach the Kubernetes API at {host}: {exc.strerror or exc}. Is the cluster running and the context right?"
        ) from None


def _translate(exc: Exception, what: str) -> ModelfleetError:
    status = getattr(exc, "status", None)
    reason = _api_message(exc)
    if status == 401:
        return Unauthorized(f"{what}: the cluster rejected our credentials ({reason})")
    if status == 403:
        return Forbidden(
            f"{what}: forbidden ({reason}); the kubeconfig user needs RBAC rights on these objects"
        )
    if status == 404:
        return NotFound(f"{what}: not found ({reason})")
    if status == 409:
        return Conflict(f"{what}: conflict ({reason})")
    if status in (400, 422):
        return InvalidInput(f"{what}: the API server refused it ({reason})")
    if type(exc).__name__ == "ResourceNotFoundError":
        return NotFound(
            f"{what}: this cluster does not know the resource type ({exc}); install its CRD or turn it off in the spec"
        )
    return Unavailable(f"{what}: {type(exc).__name__}: {reason}")


def _api_message(exc: Exception) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, bytes | str) and body:
        try:
            data = yaml.safe_load(body)
        except yaml.YAMLError:
            data = None
        if isinstance(data, dict) and isinstance(data.get("message"), str):
            return str(data["message"])
    return str(getattr(exc, "reason", None) or exc).splitlines()[0]


def normalize(obj: KubeObject | None) -> KubeObject | None:
    """Drop server-owned fields (status, managedFields, resourceVersion, ...) so objects compare by intent."""
    if obj is None:
        return None
    clean = {key: value for key, value in obj.items() if key != "status"}
    metadata = dict(clean.get("metadata") or {})
    for key in _SERVER_METADATA:
        metadata.pop(key, None)
    annotations = {
        k: v
        for k, v in (metadata.get("annotations") or {}).items()
        if k != "kubectl.kubernetes.io/last-applied-configuration"
    }
    if annotations:
        metadata["annotations"] = annotations
    else:
        metadata.pop("annotations", None)
    clean["metadata"] = metadata
    return clean


def diff_text(live: KubeObject | None, desired: KubeObject | None, label: str) -> str:
    """A unified diff of two objects' YAML after normalising; empty when they agree."""
    before = (
        yaml.safe_dump(normalize(live), sort_keys=True).splitlines(keepends=True) if live is not None else []
    )
    after = (
        yaml.safe_dump(normalize(desired), sort_keys=True).splitlines(keepends=True)
        if desired is not None
        else []
    )
    return "".join(difflib.unified_diff(before, after, fromfile=f"live/{label}", tofile=f"desired/{label}"))


def _label(obj: KubeObject) -> str:
    metadata = obj["metadata"]
    namespace = metadata.get("namespace")
    return f"{obj['kind']}/{namespace + '/' if namespace else ''}{metadata['name']}"


def _resource(client: Any, obj: KubeObject) -> Any:
    try:
        return client.resources.get(api_version=obj["apiVersion"], kind=obj["kind"])
    except Exception as exc:
        raise _translate(exc, f"{obj['kind']} ({obj['apiVersion']})") from None


def _get_live(client: Any, resource: Any, obj: KubeObject) -> KubeObject | None:
    metadata = obj["metadata"]
    try:
        live = client.get(resource, name=metadata["name"], namespace=metadata.get("namespace"))
    except Exception as exc:
        if getattr(exc, "status", None) == 404:
            return None
        raise _translate(exc, _label(obj)) from None
    result: KubeObject = live.to_dict()
    return result


def _server_side_apply(client: Any, resource: Any, obj: KubeObject, dry_run: bool) -> KubeObject:
    kwargs: dict[str, Any] = {"field_manager": FIELD_MANAGER, "force_conflicts": True}
    if dry_run:
        kwargs["dry_run"] = "All"
    metadata = obj["metadata"]
    try:
        applied = client.server_side_apply(
            resource, body=obj, name=metadata["name"], namespace=metadata.get("namespace"), **kwargs
        )
    except Exception as exc:
        raise _translate(exc, _label(obj)) from None
    result: KubeObject = applied.to_dict()
    return result


def apply_objects(client: Any, objects: list[KubeObject], dry_run: bool = False) -> list[ObjectResult]:
    """Server-side apply every object in order; with ``dry_run`` the server validates and stores nothing."""
    results = []
    for obj in objects:
        resource = _resource(client, obj)
        live = _get_live(client, resource, obj)
        applied = _server_side_apply(client, resource, obj, dry_run)
        change = diff_text(live, applied, _label(obj))
        action = "created" if live is None else ("configured" if change else "unchanged")
        results.append(
            ObjectResult(
                obj["kind"], obj["metadata"]["name"], obj["metadata"].get("namespace"), action, change
            )
        )
    return results


def diff_objects(client: Any, objects: list[KubeObject]) -> list[ObjectResult]:
    """What `apply` would change: the server's dry-run result against the live object, per object."""
    return apply_objects(client, objects, dry_run=True)


def delete_objects(client: Any, objects: list[KubeObject], dry_run: bool = False) -> list[ObjectResult]:
    """Delete in reverse apply order; objects already gone are reported as ``absent``."""
    results = []
    for obj in reversed(objects):
        resource = _resource(client, obj)
        metadata = obj["metadata"]
        kwargs: dict[str, Any] = {"propagation_policy": "Background"}
        if dry_run:
            kwargs["dry_run"] = "All"
        try:
            client.delete(resource, name=metadata["name"], namespace=metadata.get("namespace"), **kwargs)
            action = "deleted"
        except Exception as exc:
            if getattr(exc, "status", None) != 404:
                raise _translate(exc, _label(obj)) from None
            action = "absent"
        results.append(ObjectResult(obj["kind"], metadata["name"], metadata.get("namespace"), action))
    return results
