"""Render a Kubernetes Job of N parallel generator pods, so load scales on Kubernetes.

One ConfigMap holds a bench spec per pod (each with its share of the total rate, concurrency and
request count) and the samples file. An Indexed Job runs N pods at once; pod i reads ``pod-i.yaml``,
runs ``modelfleet bench run`` without gates and prints its result, raw histograms included, as one
JSON line on stdout. ``bench merge`` then reads the pod logs and combines them exactly, judging the
SLO on the merged figures (a single pod's share says nothing about the whole).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yaml

from modelfleet.bench.targets import model_targets
from modelfleet.config.bench import BenchSpec
from modelfleet.errors import InvalidInput
from modelfleet.kubeobjects import KubeObject, pod_security_context, prefer_separate_nodes
from modelfleet.yamlio import dump_manifests

CONFIG_DIR = "/etc/modelfleet-bench"
_MAX_CONFIGMAP_BYTES = 900_000  # Kubernetes caps a ConfigMap at 1 MiB; leave room for the specs


@dataclass(frozen=True, slots=True)
class JobOptions:
    pods: int
    image: str
    name: str = "modelfleet-bench"
    namespace: str = "default"
    procs_per_pod: int = 1
    cpu: str | None = None
    memory: str = "512Mi"


def _share(total: int, parts: int, part: int) -> int:
    return total // parts + (1 if part < total % parts else 0)


def pod_specs(spec: BenchSpec, pods: int, procs_per_pod: int) -> list[dict[str, Any]]:
    """Each pod's bench spec: its share of every point, no gates, no local files."""
    if spec.mode == "seq":
        raise InvalidInput("seq mode is a one-process smoke pass; run it without render-job")
    generators = pods * procs_per_pod
    for index, point in enumerate(spec.points):
        if point.concurrency is not None and point.concurrency < generators:
            raise InvalidInput(
                f"points.{index}: concurrency {point.concurrency} is less than {generators} generator processes"
            )
        if point.requests is not None and point.requests < generators:
            raise InvalidInput(
                f"points.{index}: {point.requests} requests is less than {generators} generator processes"
            )
    base = spec.model_dump(mode="json", exclude_none=True)
    if spec.serve_spec is not None:  # pods cannot read the spec file: resolve it into a URL and models now
        targets = model_targets(spec)
        base.pop("serve_spec")
        base["target"] = targets[0].base_url
        base["models"] = [{"name": t.name, "version": t.version, "weight": t.weight} for t in targets]
    for key in ("slo", "requests_csv"):
        base.pop(key, None)
    if spec.samples_file is not None:
        base["samples_file"] = f"{CONFIG_DIR}/samples.txt"
    base["procs"] = procs_per_pod
    specs = []
    for pod in range(pods):
        data = dict(base)
        points = []
        for point in spec.points:
            item = point.model_dump(mode="json", exclude_none=True)
            if point.rate_per_s is not None:
                item["rate_per_s"] = point.rate_per_s / pods
            if point.concurrency is not None:
                item["concurrency"] = _share(point.concurrency, pods, pod)
            if point.requests is not None:
                item["requests"] = _share(point.requests, pods, pod)
            points.append(item)
        data["points"] = points
        data["seed"] = spec.seed + pod * 1_000  # different arrivals per pod, still reproducible
        specs.append(data)
    return specs


def render_job(spec: BenchSpec, options: JobOptions) -> str:
    if options.pods < 1:
        raise InvalidInput("--pods must be at least 1")
    specs = pod_specs(spec, options.pods, options.procs_per_pod)
    data = {f"pod-{i}.yaml": yaml.safe_dump(s, sort_keys=False) for i, s in enumerate(specs)}
    if spec.samples_file is not None:
        data["samples.txt"] = spec.samples_file.read_text(encoding="utf-8")
    size = sum(len(v.encode()) for v in data.values())
    if size > _MAX_CONFIGMAP_BYTES:
        raise InvalidInput(
            f"the pod specs and samples take {size:,} bytes; a ConfigMap holds at most about 1 MiB (use a smaller samples file)"
        )
    labels = {
        "app.kubernetes.io/name": "modelfleet-bench",
        "app.kubernetes.io/instance": options.name,
        "app.kubernetes.io/managed-by": "modelfleet",
    }
    cpu = options.cpu or str(options.procs_per_pod)
    config_map: KubeObject = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": options.name, "namespace": options.namespace, "labels": labels},
        "data": data,
    }
    command = [
        "modelfleet",
        "bench",
        "run",
        "--config",
        f"{CONFIG_DIR}/pod-$(POD_INDEX).yaml",
        "--output",
        "-",
        "--quiet",
    ]
    job: KubeObject = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": options.name,
            "namespace": options.namespace,
            "labels": labels,
            "annotations": {
                "modelfleet.io/merge": f"kubectl logs -n {options.namespace} -l app.kubernetes.io/instance={options.name} "
                f"--tail=-1 --max-log-requests={options.pods} > pods.log && modelfleet bench merge pods.log"
                + (f" --slo '{spec.slo}'" if spec.slo else ""),
            },
        },
        "spec": {
            "completionMode": "Indexed",
            "completions": options.pods,
            "parallelism": options.pods,
            "backoffLimit": 0,
            "ttlSecondsAfterFinished": 86_400,
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "restartPolicy": "Never",
                    # The image's own non-root user, as in the fleet's pods (same image).
                    "securityContext": pod_security_context(),
                    # Generators on different nodes: two sharing one node's CPU and NIC measure each other.
                    "affinity": prefer_separate_nodes({"app.kubernetes.io/instance": options.name}),
                    "containers": [
                        {
                            "name": "generator",
                            "image": options.image,
                            "command": command,
                            "env": [
                                {
                                    "name": "POD_INDEX",
                                    "valueFrom": {
                                        "fieldRef": {
                                            "fieldPath": "metadata.annotations['batch.kubernetes.io/job-completion-index']"
                                        }
                                    },
                                }
                            ],
                            "resources": {
                                "requests": {"cpu": cpu, "memory": options.memory},
                                "limits": {"cpu": cpu, "memory": options.memory},
                            },
                            "securityContext": {
                                "allowPrivilegeEscalation": False,
                                "readOnlyRootFilesystem": True,
                                "capabilities": {"drop": ["ALL"]},
                            },
                            "volumeMounts": [
                                {"name": "config", "mountPath": CONFIG_DIR, "readOnly": True},
                                {"name": "tmp", "mountPath": "/tmp"},
                            ],
                        }
                    ],
                    "volumes": [
                        {"name": "config", "configMap": {"name": options.name}},
                        {"name": "tmp", "emptyDir": {}},
                    ],
                },
            },
        },
    }
    header = (
        f"# {options.pods} generator pods x {options.procs_per_pod} process(es). Run and merge:\n"
        f"#   kubectl apply -f job.yaml && kubectl wait -n {options.namespace} --for=condition=complete job/{options.name} --timeout=1h\n"
        f"#   {job['metadata']['annotations']['modelfleet.io/merge']}\n"
    )
    return header + dump_manifests([config_map, job])
