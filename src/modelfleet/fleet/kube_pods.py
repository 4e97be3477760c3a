"""The pods of a fleet: hardened containers, resources, probes, spreading, and what is mounted where.

Pods run non-root with a read-only root filesystem, no privilege escalation, no capabilities, seccomp
RuntimeDefault, probes on the V2 health routes, requests equal to limits for memory and storage, and
spread across zones and nodes: what Polaris, kube-score and the EKS best-practices guide check for.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from modelfleet.config.fleet import FleetModelConfig, FleetSpec, ResourcesConfig
from modelfleet.kubeobjects import RUN_AS_ID, pod_security_context, prefer_separate_nodes

# Where things live inside the image and the pod.
MODELS_DIR = "/models"
CONFIG_DIR = "/etc/modelfleet"
AUTH_DIR = "/etc/modelfleet-auth"  # beside, not inside, the read-only ConfigMap mount
ROUTER_TLS_DIR = "/etc/modelfleet-router-tls"  # beside the ConfigMap mount, like AUTH_DIR
AUTH_KEYS_FILE = "keys"
PROBE_PERIOD_S = 5
SHUTDOWN_MARGIN_S = 5


def _cpu_quantity(cores: float) -> str:
    return f"{round(cores * 1000)}m"


def _resources(resources: ResourcesConfig) -> dict[str, dict[str, str]]:
    # Requests equal limits for memory (no OOM surprises under pressure) and storage; CPU limit may exceed.
    requests = {
        "cpu": _cpu_quantity(resources.cpu_cores),
        "memory": f"{resources.memory_mib}Mi",
        "ephemeral-storage": f"{resources.ephemeral_storage_mib}Mi",
    }
    limits = {
        "cpu": _cpu_quantity(resources.effective_cpu_limit_cores),
        "memory": f"{resources.memory_mib}Mi",
        "ephemeral-storage": f"{resources.ephemeral_storage_mib}Mi",
    }
    if resources.accelerator_count > 0:
        requests[resources.accelerator_resource] = str(resources.accelerator_count)
        limits[resources.accelerator_resource] = str(resources.accelerator_count)
    return {"requests": requests, "limits": limits}


def _container_security_context() -> dict[str, Any]:
    return {
        "allowPrivilegeEscalation": False,
        "privileged": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "runAsUser": RUN_AS_ID,
        "runAsGroup": RUN_AS_ID,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def http_probe(path: str, period_s: int, failure_threshold: int, timeout_s: int = 2) -> dict[str, Any]:
    """An httpGet probe of ``path`` on the container's `http` port."""
    return {
        "httpGet": {"path": path, "port": "http"},
        "periodSeconds": period_s,
        "timeoutSeconds": timeout_s,
        "failureThreshold": failure_threshold,
    }


def _spread(spec: FleetSpec, selector: dict[str, str]) -> dict[str, Any]:
    """Zones first, then nodes; ScheduleAnyway so a single-zone cluster still schedules."""
    return {
        "topologySpreadConstraints": [
            {
                "maxSkew": 1,
                "topologyKey": key,
                "whenUnsatisfiable": "ScheduleAnyway",
                "labelSelector": {"matchLabels": selector},
            }
            for key in ("topology.kubernetes.io/zone", "kubernetes.io/hostname")
        ],
        "affinity": prefer_separate_nodes(selector),
    }


def pod_spec(
    spec: FleetSpec, container: dict[str, Any], volumes: list[dict[str, Any]], selector: dict[str, str]
) -> dict[str, Any]:
    """A pod of ``container`` under the fleet's service account (no token), hardened, spread by ``selector``."""
    k8s = spec.kubernetes
    pod: dict[str, Any] = {
        "serviceAccountName": spec.name,
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": k8s.termination_grace_s,
        "securityContext": pod_security_context(),
        "containers": [container],
        "volumes": volumes,
        **_spread(spec, selector),
    }
    if k8s.image_pull_secrets:
        pod["imagePullSecrets"] = [{"name": name} for name in k8s.image_pull_secrets]
    return pod


def base_container(spec: FleetSpec, name: str, resources: ResourcesConfig) -> dict[str, Any]:
    """What every fleet container shares (image, port, resources, hardening, config and /tmp mounts);
    the caller adds its command and probes."""
    k8s = spec.kubernetes
    container: dict[str, Any] = {
        "name": name,
        "image": spec.image.reference,
        # Always re-resolves the tag (or digest) at pod start, so a pull secret is always checked.
        "imagePullPolicy": "Always",
        "ports": [{"name": "http", "containerPort": k8s.port, "protocol": "TCP"}],
        "resources": _resources(resources),
        "securityContext": _container_security_context(),
        "volumeMounts": [
            {"name": "config", "mountPath": CONFIG_DIR, "readOnly": True},
            {"name": "tmp", "mountPath": "/tmp"},
        ],
    }
    if k8s.pre_stop_pause_s > 0:
        # Endpoints are removed asynchronously; pausing first keeps in-flight routing from hitting a closed port.
        container["lifecycle"] = {"preStop": {"exec": {"command": ["sleep", str(k8s.pre_stop_pause_s)]}}}
    return container


def tmp_volume(resources: ResourcesConfig) -> dict[str, Any]:
    """/tmp, the only writable path (the root filesystem is read-only), capped at the ephemeral storage."""
    return {"name": "tmp", "emptyDir": {"sizeLimit": f"{resources.ephemeral_storage_mib}Mi"}}


def _auth_secret_name(spec: FleetSpec) -> str:
    return spec.auth.secret_name or f"{spec.name}-auth"


def auth_keys_file(spec: FleetSpec) -> Path | None:
    """Where servers and router read the key store inside the pod; None while auth is off."""
    return Path(AUTH_DIR) / AUTH_KEYS_FILE if spec.auth.enabled else None


def mount_auth(spec: FleetSpec, container: dict[str, Any], volumes: list[dict[str, Any]]) -> None:
    """With auth on: the key store from the fleet's Secret, read-only at AUTH_DIR."""
    if not spec.auth.enabled:
        return
    container["volumeMounts"].append({"name": "auth", "mountPath": AUTH_DIR, "readOnly": True})
    volumes.append(
        {
            "name": "auth",
            "secret": {
                "secretName": _auth_secret_name(spec),
                "items": [{"key": AUTH_KEYS_FILE, "path": AUTH_KEYS_FILE}],
                "defaultMode": 0o440,
            },
        }
    )


def image_model_path(model: FleetModelConfig) -> Path:
    """Where `modelfleet image context` puts a model's artifact inside the image."""
    return Path(MODELS_DIR) / model.name


def graceful_shutdown_s(spec: FleetSpec) -> float:
    """The server's drain time, kept inside the pod's grace period after the pre-stop pause."""
    k8s = spec.kubernetes
    return float(max(1, k8s.termination_grace_s - k8s.pre_stop_pause_s - SHUTDOWN_MARGIN_S))
