"""Live probes (harmless) and drills (disruptive) against a running local fleet; they record, checks judge.

Probes: an infer without a key, with a key lacking the model's scope, with a malformed body; each served
model's metadata (its sha256). Drills: a burst of concurrent requests (503s expected, then recovery) and a
kill -9 of one replica (healed, and its replica_restarted event delivered by the notifier).
"""

from __future__ import annotations

import asyncio
import math
import os
import signal
import time
from pathlib import Path
from typing import Any

import httpx

from modelfleet.errors import InvalidInput, Unavailable
from modelfleet.review.inputs import DrillEvidence, LiveEvidence, Probe, RegistryEvidence

# The harmless probes are refused before the body is read (401, 403) or while parsing it (malformed), so
# a placeholder serves them; the drills need a request the model accepts (built from its metadata).
_BODY = {"inputs": [{"name": "input", "shape": [1, 1], "datatype": "FP32", "data": [0.0]}]}


def _valid_body(metadata: dict[str, Any]) -> dict[str, Any]:
    """One row of zeros (or empty strings for BYTES) per input the model's V2 metadata declares."""
    inputs = []
    for spec in metadata.get("inputs", []):
        shape = [1 if int(dim) < 0 else int(dim) for dim in spec.get("shape", [1])]
        count = math.prod(shape)
        fill: Any = (
            "" if spec.get("datatype") == "BYTES" else (False if spec.get("datatype") == "BOOL" else 0)
        )
        inputs.append(
            {"name": spec["name"], "shape": shape, "datatype": spec["datatype"], "data": [fill] * count}
        )
    return {"inputs": inputs}


def _client(timeout_s: float) -> httpx.Client:
    return httpx.Client(timeout=timeout_s, verify=False)


def _excerpt(response: httpx.Response) -> str:
    return response.text[:200].replace("\n", " ")


def _expected_hashes(fleet_root: Path, registry: RegistryEvidence | None) -> dict[str, tuple[str, str]]:
    """model → (sha256 of its model file, where that comes from): the registry's record, else the artifact's manifest."""
    import json

    import yaml

    from modelfleet.fleet.state import FleetPaths

    expected = {
        v.model: (v.model_sha256, f"registry {v.ref}") for v in (registry.versions if registry else ())
    }
    specs = FleetPaths(fleet_root).specs_dir
    for serve_spec in sorted(specs.iterdir()) if specs.is_dir() else []:
        try:
            models = (yaml.safe_load(serve_spec.read_text()) or {}).get("models", [])
        except (ValueError, yaml.YAMLError, AttributeError):
            continue
        for model in models:
            manifest = Path(str(model.get("path", ""))) / "manifest.json"
            if model.get("name") not in expected and manifest.is_file():
                data = json.loads(manifest.read_text())
                model_file = data.get("model_file", "model.onnx")
                expected[model["name"]] = (data.get("files", {}).get(model_file, ""), f"{manifest}")
    return expected


def run_probes(
    router_url: str,
    models: list[str],
    auth_enabled: bool,
    probe_key: str | None,
    api_key: str | None,
    fleet_root: Path,
    registry: RegistryEvidence | None,
    timeout_s: float,
) -> LiveEvidence:
    model = models[0]
    url = f"{router_url}/v2/models/{model}/infer"
    probes: list[Probe] = []
    served: dict[str, str] = {}
    read_headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        with _client(timeout_s) as client:
            response = client.post(url, json=_BODY)
            probes.append(Probe("unauthenticated", url, response.status_code, _excerpt(response), model))
            if probe_key is not None or not auth_enabled:
                key = probe_key or "modelfleet-review-probe-not-a-key"
                response = client.post(url, json=_BODY, headers={"Authorization": f"Bearer {key}"})
                probes.append(Probe("out_of_scope", url, response.status_code, _excerpt(response), model))
            response = client.post(
                url,
                content=b'{"inputs": [{"name": ',
                headers={**read_headers, "Content-Type": "application/json"},
            )
            probes.append(Probe("malformed", url, response.status_code, _excerpt(response), model))
            for name in models:
                metadata_url = f"{router_url}/v2/models/{name}"
                response = client.get(metadata_url, headers=read_headers)
                if response.status_code == 200:
                    served[name] = str(response.json().get("parameters", {}).get("sha256", ""))
                else:  # kept so the check can tell "refused the probe's key" from "serves nothing"
                    probes.append(
                        Probe("metadata", metadata_url, response.status_code, _excerpt(response), name)
                    )
    except httpx.HTTPError as exc:
        raise Unavailable(
            f"fleet router {router_url} is unreachable ({type(exc).__name__}); is the fleet up?"
        ) from None
    return LiveEvidence(
        router_url, auth_enabled, tuple(probes), served, _expected_hashes(fleet_root, registry)
    )


async def _burst(
    url: str, body: dict[str, Any], count: int, concurrency: int, headers: dict[str, str], timeout_s: float
) -> tuple[dict[str, int], list[float], int]:
    """`count` requests, `concurrency` in flight at a time; a 503's latency is timed from when its slot opened.

    Timing from the slot, not from the gather, keeps the client's own queue out of the refusal latency: with
    300 requests all started at once on 2 cores the 503s measured 2.6 s at p99, nearly all of it httpx's pool.
    """
    outcomes: dict[str, int] = {}
    refusals: list[float] = []
    timeouts = 0
    slots = asyncio.Semaphore(concurrency)
    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(timeout=timeout_s, limits=limits, verify=False) as client:

        async def one() -> None:
            nonlocal timeouts
            async with slots:
                started = time.perf_counter()
                try:
                    response = await client.post(url, json=body, headers=headers)
                except httpx.TimeoutException:
                    timeouts += 1
                    return
                except httpx.HTTPError:
                    outcomes["connection_error"] = outcomes.get("connection_error", 0) + 1
                    return
            key = "ok" if response.status_code == 200 else f"http_{response.status_code}"
            outcomes[key] = outcomes.get(key, 0) + 1
            if response.status_code == 503:
                refusals.append((time.perf_counter() - started) * 1000)

        await asyncio.gather(*(one() for _ in range(count)))
    return outcomes, refusals, timeouts


def _recovery(
    client: httpx.Client, url: str, body: dict[str, Any], headers: dict[str, str], within_s: float
) -> str:
    """Poll with one request every 0.1 s until one succeeds (the router may hold the model briefly after 503s)."""
    started = time.monotonic()
    status = 0
    while True:
        try:
            status = client.post(url, json=body, headers=headers).status_code
        except httpx.HTTPError as exc:
            status = 0
            note = type(exc).__name__
        else:
            note = f"HTTP {status}"
        waited = time.monotonic() - started
        if status == 200 or waited >= within_s:
            return f"{'ok' if status == 200 else 'not recovered'}: {note} {waited:.2f} s after the burst"
        time.sleep(0.1)


def run_drills(
    router_url: str,
    model: str,
    fleet_root: Path,
    api_key: str | None,
    burst: int,
    concurrency: int,
    heal_within_s: float,
    timeout_s: float,
) -> DrillEvidence:
    """Overload burst, then kill -9 one server replica and wait (up to heal_within_s) for it and its notification."""
    from modelfleet.fleet.state import FleetPaths, read_state
    from modelfleet.operate.events import read_events_at

    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    url = f"{router_url}/v2/models/{model}/infer"
    with _client(timeout_s) as client:
        try:
            metadata = client.get(f"{router_url}/v2/models/{model}", headers=headers)
        except httpx.HTTPError as exc:
            raise Unavailable(f"fleet router {router_url} is unreachable ({type(exc).__name__})") from None
        if metadata.status_code != 200:
            raise InvalidInput(
                f"drill: GET /v2/models/{model} answered HTTP {metadata.status_code}; give --api-key with "
                f"the read and infer:{model} scopes"
            )
        body = _valid_body(metadata.json())
        outcomes, refusals, timeouts = asyncio.run(_burst(url, body, burst, concurrency, headers, timeout_s))
        recovery_note = _recovery(client, url, body, headers, timeout_s)
    refusals.sort()
    p99 = refusals[min(len(refusals) - 1, int(0.99 * len(refusals)))] if refusals else None
    paths = FleetPaths(fleet_root)
    state = read_state(paths)
    victims = [p for p in state.processes if p.kind == "server" and p.state == "ready" and p.pid]
    if not victims:
        raise InvalidInput(f"fleet {state.fleet}: no ready server replica to kill")
    victim = victims[0]
    _, offset = read_events_at(paths.events_file)
    killed_at = time.monotonic()
    os.kill(int(victim.pid or 0), signal.SIGKILL)
    healed_s = None
    notified = False
    note = "no replica_restarted event within the drill"
    deadline = killed_at + heal_within_s
    while time.monotonic() < deadline and (healed_s is None or not notified):
        time.sleep(0.1)
        current = read_state(paths).process(victim.id)
        if healed_s is None and current.state == "ready" and current.pid != victim.pid:
            healed_s = time.monotonic() - killed_at
        events, _ = read_events_at(paths.events_file, offset)
        restart = [(at, e) for at, e in events if e.kind == "replica_restarted" and e.process == victim.id]
        if restart:
            delivered = _delivered_offset(paths.notify_offset_file)
            dead = (
                paths.dead_letter_file.is_file()
                and restart[0][1].key.encode() in paths.dead_letter_file.read_bytes()
            )
            notified = delivered > restart[0][0] and not dead
            note = f"event '{restart[0][1].summary}' logged; " + (
                "delivered to the sinks" if notified else ("dead-lettered" if dead else "not yet delivered")
            )
    return DrillEvidence(
        burst_requests=burst,
        burst_outcomes=outcomes,
        refusal_p99_ms=None if p99 is None else round(p99, 1),
        timeouts=timeouts,
        recovered=recovery_note.startswith("ok"),
        recovery_note=recovery_note,
        killed=victim.id,
        healed_s=healed_s,
        notified=notified,
        notification_note=note,
    )


def _delivered_offset(path: Path) -> int:
    try:
        return int(path.read_text().strip() or 0)
    except (OSError, ValueError):
        return 0
