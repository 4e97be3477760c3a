"""Simulate the batcher's admission rule to choose `queue_wait_runs` (the table in docs/serve.md).

A discrete-event model of one instance: Poisson arrivals of one-item requests, FIFO batches of up to
`max_batch_size`, a run costing FIXED_S + PER_ITEM_S × items (a linear fit of MiniLM's measured batch
throughput in results/serve_throughput.md), and the admission rule of server/batching.py (moving averages
with weight 0.25, overdue runs, 5 ms floor). A simulation, not a measurement: benchmarks/chaos.py measures.

    python benchmarks/admission_sim.py
"""

from __future__ import annotations

import math
import random

FIXED_S, PER_ITEM_S, MAX_BATCH, WEIGHT, FLOOR_S = 0.006, 0.0023, 32, 0.25, 0.005


def run_s(items: int) -> float:
    return FIXED_S + PER_ITEM_S * items


def simulate(
    rate_per_s: float, runs: float, duration_s: float = 20.0, seed: int = 1
) -> tuple[float, float, float]:
    """(refused fraction, admitted p99 seconds, served per second)."""
    rnd = random.Random(seed)
    now, queue, running = 0.0, [], None  # running: (start, end, arrival times)
    items_avg, seconds_avg, solo_s = 1.0, run_s(1), run_s(1)
    latencies: list[float] = []
    refused = arrivals = 0
    next_arrival = rnd.expovariate(rate_per_s)
    while now < duration_s:
        end = running[1] if running else math.inf
        if next_arrival <= end:
            now, next_arrival = next_arrival, next_arrival + rnd.expovariate(rate_per_s)
            arrivals += 1
            ahead = len(queue) + (len(running[2]) if running else 0)
            if ahead:
                rate = items_avg / seconds_avg
                if running:
                    elapsed_runs = (now - running[0]) * rate / len(running[2])
                    rate /= max(1.0, elapsed_runs - 1.0)
                if ahead / rate > max(FLOOR_S, runs * solo_s):
                    refused += 1
                    continue
            queue.append(now)
        else:
            now = end
            started, _, batch = running  # type: ignore[misc]
            latencies.extend(end - arrived for arrived in batch)
            items_avg += WEIGHT * (len(batch) - items_avg)
            seconds_avg += WEIGHT * (end - started - seconds_avg)
            if len(batch) == 1:
                solo_s += WEIGHT * (end - started - solo_s)
            running = None
        if running is None and queue:
            batch, queue = queue[:MAX_BATCH], queue[MAX_BATCH:]
            running = (now, now + run_s(len(batch)), batch)
    latencies.sort()
    return refused / arrivals, latencies[int(0.99 * len(latencies))], len(latencies) / duration_s


def main() -> None:
    peak_per_s = MAX_BATCH / run_s(MAX_BATCH)
    print(f"peak {peak_per_s:.0f} items/s; unloaded p99 {simulate(30, 100)[1] * 1000:.1f} ms")
    for runs in (2, 3, 4, 6):
        refused_half, _, _ = simulate(peak_per_s / 2, runs)
        _, p99_s, served = simulate(3 * peak_per_s, runs)
        print(
            f"queue_wait_runs {runs}: 3x overload p99 {p99_s * 1000:.1f} ms, goodput "
            f"{100 * served / peak_per_s:.0f} % of peak; refused at half of peak {100 * refused_half:.1f} %"
        )


if __name__ == "__main__":
    main()
