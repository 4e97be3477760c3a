"""`modelfleet tune` on the bundled MiniLM: does the recommendation follow the SLO and the rate, and what does
it save against the default configuration at the same SLO?

Two tunes (p99 < 25 ms and p99 < 250 ms), each over fp32 and int8 × 1 and 2 CPUs × batch sizes ×
workers, with `modelfleet serve`'s defaults (fp32, batch 32, delay 2 ms, 1 worker, threads auto, all
CPUs) inside the space, so the default is measured in the same run as the winner. Capacity does not
depend on the target rate, so each tune's measured trials are priced again for a second rate.

    python benchmarks/tune.py --fp32 artifacts/minilm --int8 artifacts/minilm-int8           # full, ~1 h
    python benchmarks/tune.py --fp32 ... --int8 ... --short                                 # ~5 min

Writes benchmarks/results/tune.md (and the two tune-results files beside it).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from _harness import RESULTS_DIR, machine_description
from modelfleet.config.tune import TuneSpec
from modelfleet.tune.ranking import price_trial
from modelfleet.tune.results import TrialRecord, TuneResult
from modelfleet.tune.search import run_tune

SLOS = ("p99<25ms,error_rate<1%", "p99<250ms,error_rate<1%")
RATES = (100.0, 1000.0)
DEFAULT_SETTINGS = {
    "max_batch_size": 32,
    "max_delay_s": 0.002,
    "workers": 1,
    "intra_op_threads": 0,
    "instances": 1,
    "length_grouping": True,
}


def tune_spec(fp32: Path, int8: Path, slo: str, short: bool) -> TuneSpec:
    capacity = (
        {
            "start_rate_per_s": 20,
            "max_rate_per_s": 1600,
            "probe_duration_s": 1.5,
            "warmup_s": 0.5,
            "window_s": 0.5,
            "repeats": 1,
            "max_probes": 8,
            "late_send_threshold_s": 0.01,
            "max_late_fraction": 0.05,
        }
        if short
        else {
            "start_rate_per_s": 20,
            "max_rate_per_s": 2000,
            "probe_duration_s": 5,
            "warmup_s": 1,
            "repeats": 2,
        }
    )
    space = (
        {"max_batch_size": [8, 32], "workers": [1], "intra_op_threads": [0]}
        if short
        else {"max_batch_size": [1, 8, 32], "workers": [1, 2], "intra_op_threads": [0]}
    )
    return TuneSpec(
        artifacts=[fp32, int8],
        slo=slo,
        target_rate_per_s=RATES[0],
        hardware=[{"cpus": 1}, {"cpus": 2}],
        space=space,
        capacity=capacity,
        prices={"families": ["c7i", "c6i", "m7i"]},
        verify_floor_ms=10.0 if short else 1.0,
    )


def priced_at(result: TuneResult, trial: TrialRecord, rate: float) -> tuple[float, int, float]:
    """Fleet $/h, replicas and $/1M of a measured trial for another target rate."""
    hardware = result.hardware[trial.hardware]
    pricing = price_trial(trial.capacity_per_s, trial.memory_mib, 0.0, hardware, rate, result.headroom)
    return pricing.fleet_price_per_h, pricing.replicas, pricing.cost_per_million


def is_default(result: TuneResult, trial: TrialRecord) -> bool:
    return (
        trial.precision == "fp32"
        and dict(trial.settings) == DEFAULT_SETTINGS
        and len(result.hardware[trial.hardware].cpus) == max(len(h.cpus) for h in result.hardware)
    )


def section(slo: str, result: TuneResult, elapsed_s: float) -> list[str]:
    ok = [t for t in result.trials if t.status == "ok"]
    lines = [f"### {slo} — {len(result.trials)} trials in {elapsed_s:,.0f} s", ""]
    lines += [
        "| target/s | recommendation | instance | replicas | fleet $/h | $/1M conforming | default $/h | default ÷ winner |",
        "|---|---|---|---|---|---|---|---|",
    ]
    default = next((t for t in result.trials if is_default(result, t)), None)
    for rate in RATES:
        if not ok:
            lines.append(f"| {rate:,.0f} | none met the SLO | | | | | | |")
            continue
        priced = sorted(
            ((priced_at(result, t, rate), t) for t in ok), key=lambda item: (item[0][0], item[0][2])
        )
        (price, replicas, per_million), winner = priced[0]
        if default is not None and default.status == "ok":
            default_price = priced_at(result, default, rate)[0]
            default_text, ratio = f"{default_price:.4f}", f"{default_price / price:.2f}×"
        else:
            default_text, ratio = "default met the SLO at no rate", "–"
        lines.append(
            f"| {rate:,.0f} | {winner.label} | {result.hardware[winner.hardware].instance_type} | {replicas} | "
            f"{price:.4f} | {per_million:.4f} | {default_text} | {ratio} |"
        )
    lines += [
        "",
        f"| configuration | capacity/s | p99 ms at its share of {RATES[0]:,.0f}/s | $/1M conforming |",
        "|---|---|---|---|",
    ]
    for trial in sorted(result.trials, key=lambda t: -t.capacity_per_s):
        p99 = trial.at_target.p99_ms if trial.at_target and trial.at_target.p99_ms is not None else None
        lines.append(
            f"| {trial.label}{' (default)' if is_default(result, trial) else ''} | {trial.capacity_per_s:,.1f} | "
            f"{'–' if p99 is None else f'{p99:.1f}'} | {'–' if trial.cost_per_million is None else f'{trial.cost_per_million:.4f}'} |"
        )
    if result.verification is not None:
        v = result.verification
        lines += [
            "",
            f"Re-verification of the winner at {v.rate_per_s:,.1f}/s: {'passed' if v.passed else 'failed'} ({v.note}).",
        ]
    return [*lines, ""]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--fp32", type=Path, required=True, help="fp32 MiniLM artifact")
    parser.add_argument("--int8", type=Path, required=True, help="int8 MiniLM artifact")
    parser.add_argument("--short", action="store_true", help="a small space and 1.5 s probes (~5 min)")
    args = parser.parse_args()
    RESULTS_DIR.mkdir(exist_ok=True)
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    load_at_start = os.getloadavg()[0]
    sections: list[str] = []
    for index, slo in enumerate(SLOS):
        spec = tune_spec(args.fp32.resolve(), args.int8.resolve(), slo, args.short)
        began = time.monotonic()
        result = run_tune(spec, RESULTS_DIR / f"tune-{index}.json", force=True)
        sections += section(slo, result, time.monotonic() - began)
        print(
            f"{slo}: {result.recommendation.why if result.recommendation else 'no recommendation'}",
            file=sys.stderr,
        )
    mode = "SHORT (small space, 1.5 s probes, relaxed late-send rule)" if args.short else "full"
    text = "\n".join(
        [
            "# `modelfleet tune` on the bundled MiniLM",
            "",
            f"Command: `python benchmarks/tune.py --fp32 ... --int8 ...{' --short' if args.short else ''}` ({mode}), {started}.",
            f"Machine: {machine_description()}.",
            "",
            "Each SLO is one tune over fp32/int8 × 1/2 CPUs × the space; the default configuration (fp32, batch 32,",
            "1 worker, threads auto, all CPUs) is one of its trials. The second target rate prices the same measured",
            "trials again (capacity does not depend on the target). Prices: the shipped AWS table (mid-2024 list",
            "prices, check before relying), families c7i/c6i/m7i. 'default ÷ winner' is the fleet $/h ratio at the",
            "same SLO and rate, from the same run.",
            "",
            *(
                [
                    f"**This run is SHORT** (load average {load_at_start:.2f} at the start, {os.getloadavg()[0]:.2f} at the "
                    "end, 2 cores): the figures show the method and the direction; a full run measures longer.",
                    "",
                ]
                if args.short
                else []
            ),
            *sections,
        ]
    )
    (RESULTS_DIR / "tune.md").write_text(text + "\n")
    print(f"wrote {RESULTS_DIR / 'tune.md'}", file=sys.stderr)


if __name__ == "__main__":
    main()
