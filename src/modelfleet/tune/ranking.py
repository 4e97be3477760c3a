"""Price each trial, rank them and say why the winner won and each runner-up lost. Pure functions.

Ranking: the fleet's $ per hour at the target rate (what a user pays), then $ per 1M conforming
inferences at capacity (how efficiently a replica turns dollars into answers within the SLO), then
capacity. Trials that failed or met the SLO at no rate come last.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from modelfleet.tune.cost import Workload, cost_per_million, fleet_cost, replica_share, replicas_needed
from modelfleet.tune.results import HardwareRecord, Recommendation, TrialRecord


@dataclass(frozen=True, slots=True)
class Pricing:
    replicas: int
    per_replica_rate_per_s: float
    nodes: int
    fleet_price_per_h: float
    replica_price_per_h: float
    cost_per_million: float
    idle_share: float


def price_trial(
    goodput_per_s: float,
    memory_mib: float,
    cpu_used: float,
    hardware: HardwareRecord,
    target_rate_per_s: float,
    headroom: float,
) -> Pricing:
    """What serving ``target_rate_per_s`` costs with replicas of ``goodput_per_s`` each on ``hardware``.

    A replica requests the hardware's CPUs and its memory limit (or, without one, the memory it was
    measured to use) and uses ``cpu_used`` CPUs at its share of the target.
    """
    replicas = replicas_needed(target_rate_per_s, goodput_per_s, headroom)
    cpus = len(hardware.cpus)
    request_mib = float(hardware.memory_mib) if hardware.memory_mib else math.ceil(memory_mib)
    workload = Workload("model", replicas, cpus, request_mib, cpu_used, memory_mib)
    fleet = fleet_cost(
        [workload], hardware.instance_vcpu, hardware.instance_memory_mib, hardware.instance_price_per_h
    )
    share = replica_share(cpus, request_mib, hardware.instance_vcpu, hardware.instance_memory_mib)
    replica_price = hardware.instance_price_per_h * share
    return Pricing(
        replicas=replicas,
        per_replica_rate_per_s=target_rate_per_s / replicas,
        nodes=len(fleet.nodes),
        fleet_price_per_h=fleet.price_per_h,
        replica_price_per_h=replica_price,
        cost_per_million=cost_per_million(replica_price, goodput_per_s),
        idle_share=fleet.idle_share,
    )


def _order(trial: TrialRecord) -> tuple[int, float, float, float]:
    if trial.status != "ok" or trial.fleet_price_per_h is None:
        return (1, math.inf, math.inf, -trial.capacity_per_s)
    return (0, round(trial.fleet_price_per_h, 6), trial.cost_per_million or math.inf, -trial.capacity_per_s)


def rank(trials: list[TrialRecord]) -> list[TrialRecord]:
    return sorted(trials, key=lambda t: (*_order(t), t.index))


def _fleet_text(trial: TrialRecord, instance_type: str) -> str:
    return (
        f"{trial.replicas} replica(s) at {trial.capacity_per_s:,.0f}/s each on {trial.nodes} × {instance_type} "
        f"(${trial.fleet_price_per_h or 0:.4f}/h)"
    )


def why_lost(trial: TrialRecord, winner: TrialRecord, instance_of: dict[int, str]) -> str:
    if trial.status == "failed":
        return f"failed: {trial.error}"
    if trial.status == "no_capacity":
        return (
            f"meets the SLO at no rate tried ({trial.error})"
            if trial.error
            else "meets the SLO at no rate tried"
        )
    assert trial.fleet_price_per_h is not None and winner.fleet_price_per_h is not None
    more = trial.fleet_price_per_h - winner.fleet_price_per_h
    if more > 1e-9:
        return f"${more:.4f}/h more: {_fleet_text(trial, instance_of[trial.hardware])}"
    return (
        f"same fleet price, but ${trial.cost_per_million or 0:.4f} vs ${winner.cost_per_million or 0:.4f} "
        f"per 1M conforming at capacity ({trial.capacity_per_s:,.0f}/s vs {winner.capacity_per_s:,.0f}/s)"
    )


def recommend(
    trials: list[TrialRecord], hardware: list[HardwareRecord], target_rate_per_s: float, runners_up: int = 5
) -> tuple[list[str], Recommendation | None]:
    """The ranking (keys, best first) and the recommendation, None when no trial met the SLO."""
    ranked = rank(trials)
    keys = [t.key for t in ranked]
    if not ranked or ranked[0].status != "ok":
        return keys, None
    winner = ranked[0]
    instance_of = {h.index: h.instance_type for h in hardware}
    why = (
        f"cheapest fleet for {target_rate_per_s:,.0f}/s: {_fleet_text(winner, instance_of[winner.hardware])}"
    )
    losers = [
        {"key": t.key, "label": t.label, "why": why_lost(t, winner, instance_of)}
        for t in ranked[1 : 1 + runners_up]
    ]
    return keys, Recommendation(key=winner.key, why=why, runners_up=losers)
