"""Tune trials on Kubernetes: per instance type and configuration, the fleet renderer's server group (a
Deployment on that instance type, its Service and serve spec) and a `bench render-job` load generator
whose open-loop points double from `capacity.start_rate_per_s` to `capacity.max_rate_per_s`.

Rendered only: nothing here talks to a cluster. After `kubectl apply`, merge each Job's pod logs with
`bench merge --slo ...`; the highest passing point is the capacity lower bound, and a narrower sweep
between it and the first failing point bisects further.
"""

from __future__ import annotations

from pathlib import Path

from modelfleet.bench.kubejob import JobOptions, render_job
from modelfleet.config.bench import BenchSpec, LoadPoint, ModelTargetSpec
from modelfleet.config.fleet import (
    AuthConfig,
    FleetModelConfig,
    FleetSpec,
    ImageConfig,
    KubernetesConfig,
    PoolConfig,
    ResourcesConfig,
)
from modelfleet.config.serve import BatchingConfig
from modelfleet.config.tune import TuneSpec
from modelfleet.fleet.kubernetes import manifests_to_yaml, render_fleet
from modelfleet.fleet.sizing import plan_from_spec
from modelfleet.tune.prices import load_prices, map_hardware
from modelfleet.tune.space import Candidate, all_candidates, artifact_variants

NO_CLUSTER = (
    "rendered only: no cluster runs here; apply with kubectl and merge the Job logs with `bench merge`"
)


def _rates(spec: TuneSpec) -> list[float]:
    rates = [spec.capacity.start_rate_per_s]
    while rates[-1] * 2 <= spec.capacity.max_rate_per_s:
        rates.append(rates[-1] * 2)
    return rates


def image_config(image: str) -> ImageConfig:
    """REPOSITORY:TAG or REPOSITORY@sha256:DIGEST as the fleet spec's image."""
    if "@" in image:
        repository, digest = image.split("@", 1)
        return ImageConfig(repository=repository, digest=digest)
    repository, _, tag = image.rpartition(":")
    if not repository or "/" in tag:
        return ImageConfig(repository=image)
    return ImageConfig(repository=repository, tag=tag)


def trial_fleet(
    spec: TuneSpec, candidate: Candidate, instance_type: str, namespace: str, image: str
) -> FleetSpec:
    hardware = spec.hardware[candidate.hardware_index]
    settings = candidate.settings
    name = f"tune-{candidate.key[:10]}"
    pool = PoolConfig(
        name="trial",
        replicas=1,
        workers=settings.workers,
        resources=ResourcesConfig(cpu_cores=hardware.cpus, memory_mib=hardware.memory_mib or 2048),
        instance_type=instance_type,
    )
    pool.autoscaling.enabled = False
    model = FleetModelConfig(
        name=spec.model_name or candidate.variant.name,
        path=candidate.variant.path,
        batching=BatchingConfig(max_batch_size=settings.max_batch_size, max_delay_s=settings.max_delay_s),
        instances=settings.instances,
        intra_op_threads=settings.intra_op_threads,
        length_grouping=settings.length_grouping,
    )
    # A trial measures the server alone: no router, and no API keys between the generator and it.
    return FleetSpec(
        name=name,
        models=[model],
        pools=[pool],
        auth=AuthConfig(enabled=False),
        kubernetes=KubernetesConfig(namespace=namespace),
        image=image_config(image),
    )


def render_trials(spec: TuneSpec, image: str, namespace: str = "modelfleet-tune") -> dict[str, str]:
    """File name → YAML: for each trial its server group (no router) and its generator Job."""
    prices = load_prices(spec.prices)
    variants, _ = artifact_variants(spec)
    files: dict[str, str] = {}
    for candidate in all_candidates(spec, variants)[: spec.max_trials]:
        index = candidate.hardware_index
        instance_type = map_hardware(
            spec.hardware[index], prices, spec.prices.families, f"hardware.{index}"
        ).instance_type
        fleet = trial_fleet(spec, candidate, instance_type, namespace, image)
        plan = plan_from_spec(fleet)
        # The server group alone: no router, and no NetworkPolicies (they admit only the router).
        objects = [
            o
            for o in render_fleet(plan)
            if "router" not in o["metadata"]["name"] and o["kind"] != "NetworkPolicy"
        ]
        group = plan.groups[0]
        service = f"{fleet.name}-{group.name}"
        bench = BenchSpec(
            target=f"http://{service}.{namespace}.svc:{fleet.kubernetes.port}",
            models=[ModelTargetSpec(name=fleet.models[0].name)],
            mode="open",
            arrival=spec.capacity.arrival,
            points=[LoadPoint(rate_per_s=r, duration_s=spec.capacity.probe_duration_s) for r in _rates(spec)],
            warmup_s=spec.capacity.warmup_s,
            slo=spec.slo,
            seed=spec.seed,
        )
        job = render_job(
            bench, JobOptions(pods=1, image=image, name=f"{fleet.name}-load", namespace=namespace)
        )
        header = (
            f"# tune trial {candidate.key}: {candidate.variant.precision} {candidate.settings.label()} on "
            f"{instance_type}\n# {NO_CLUSTER}\n"
        )
        files[f"{fleet.name}-{instance_type}.yaml"] = header + manifests_to_yaml(objects) + "---\n" + job
    return files


def write_trials(spec: TuneSpec, folder: Path, image: str, namespace: str = "modelfleet-tune") -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in render_trials(spec, image, namespace).items():
        path = folder / name
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written
