"""Drift detection quality and the serving cost of sampling, side by side in one run:

  (1) tabular: iris-like Gaussians (4 features, iris means and spreads, a label from a fixed rule). Windows of
      the reference distribution (false alarms) and with one feature shifted by a fraction of its standard
      deviation (detections), across window sizes and reference sizes (small: KS/chi-square with Holm;
      large: Wasserstein/Jensen-Shannon against thresholds), at the default settings (modelfleet.drift.detect);
  (2) text: MiniLM embeddings (/work/artifacts/minilm, in process) of two synthetic text sources with
      different vocabularies; windows mixing a share of source B into source A, MMD permutation test;
  (3) serving cost: MiniLM served by `modelfleet serve` under wrk at 64 connections with sampling off,
      at the default rate (0.05), and at rate 1 with the capture on.

    .venv/bin/python benchmarks/drift.py            # full run (about 20 minutes on 2 cores)
    .venv/bin/python benchmarks/drift.py --short    # fewer trials, 5 s load points (< 2 minutes)

Writes benchmarks/results/drift.md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from modelfleet.config.drift import DriftConfig
from modelfleet.drift.detect import assess
from modelfleet.drift.sampling import Window
from modelfleet.manifest import read_manifest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import WrkResult, free_port, require_wrk, run_wrk, server_process, write_result

CENTRES = np.array([5.84, 3.06, 3.76, 1.20])
SPREADS = np.array([0.83, 0.44, 1.77, 0.76])
MINILM = Path(os.environ.get("MODELFLEET_MINILM", "/work/artifacts/minilm"))
MODELFLEET = [sys.executable, "-m", "modelfleet.cli.main", "serve"]
SENTENCE = "The quick brown fox jumps over the lazy dog near the river bank."
TEXT_BODY = json.dumps({"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": [SENTENCE]}]})

# Two text sources: everyday life and weather (A) against markets and software (B), same sentence frames.
SOURCE_A = {
    "subject": [
        "the dog",
        "my neighbour",
        "a child",
        "the old man",
        "our cat",
        "the farmer",
        "a tourist",
        "the baker",
    ],
    "verb": [
        "walked to",
        "looked at",
        "painted",
        "cleaned",
        "visited",
        "photographed",
        "waited near",
        "left",
    ],
    "object": [
        "the garden",
        "the beach",
        "a small lake",
        "the kitchen",
        "the park",
        "the village",
        "the forest",
        "a bakery",
    ],
    "tail": [
        "in the rain",
        "on a sunny morning",
        "before dinner",
        "after the storm",
        "in the snow",
        "at sunset",
    ],
}
SOURCE_B = {
    "subject": [
        "the central bank",
        "the startup",
        "our database",
        "the trading desk",
        "the compiler",
        "an investor",
    ],
    "verb": ["raised", "deployed", "refactored", "hedged", "benchmarked", "audited", "priced", "indexed"],
    "object": [
        "interest rates",
        "the kubernetes cluster",
        "a bond portfolio",
        "the API gateway",
        "quarterly earnings",
    ],
    "tail": [
        "after the IPO",
        "during the outage",
        "before the merger",
        "in the release branch",
        "at market close",
    ],
}


def _sentences(source: dict[str, list[str]], count: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    parts = [rng.choice(source[key], size=count) for key in ("subject", "verb", "object", "tail")]
    return [f"{s.capitalize()} {v} {o} {t}." for s, v, o, t in zip(*parts, strict=True)]


def _tabular(rng: np.random.Generator, items: int, shift_sd: float) -> Window:
    features = rng.normal(CENTRES, SPREADS, size=(items, 4)).astype(np.float32)
    features[:, 2] += shift_sd * SPREADS[2]
    labels = (features[:, 2] > 2.5).astype(np.int64) + (features[:, 2] > 4.9)
    return Window({"input": features}, {"label": labels}, np.zeros(items))


def _rate(flags: list[bool]) -> float:
    return 100.0 * sum(flags) / max(len(flags), 1)


def tabular_quality(
    trials: int, reference_sizes: list[int], window_sizes: list[int], shifts: list[float]
) -> str:
    config = DriftConfig()
    rng = np.random.default_rng(0)
    rows = [
        "| reference items | tests | window items | " + " | ".join(f"shift {s:g} sd" for s in shifts) + " |",
        "|---|---|---|" + "---|" * len(shifts),
    ]
    for reference_items in reference_sizes:
        tests = (
            "Wasserstein/JS thresholds"
            if reference_items >= config.large_reference_items
            else "KS/chi-square, Holm"
        )
        for window_items in window_sizes:
            cells = []
            for shift in shifts:
                # A fresh reference each trial: each trial is one deployment, so the rate is the test's own
                # (one fixed reference would give the rate conditional on that one sample of it).
                flags = [
                    assess(
                        "iris",
                        1,
                        _tabular(rng, reference_items, 0.0),
                        _tabular(rng, window_items, shift),
                        config,
                    ).drifted
                    for _ in range(trials)
                ]
                cells.append(f"{_rate(flags):.1f} %")
            rows.append(f"| {reference_items} | {tests} | {window_items} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def embed(texts: list[str]) -> np.ndarray[Any, Any]:
    from modelfleet.runtime import load_model

    model = load_model(MINILM, intra_op_threads=0)
    try:
        parts = []
        for start in range(0, len(texts), 64):
            batch = np.array([t.encode() for t in texts[start : start + 64]], dtype=object)
            parts.append(model.predict(model.validate_inputs({"text": batch}))["embedding"])
        return np.concatenate(parts)
    finally:
        model.close()


def text_quality(
    trials: int, reference_items: int, window_sizes: list[int], mixes: list[float], pool_size: int
) -> str:
    config = DriftConfig()
    source_a = embed(_sentences(SOURCE_A, pool_size, seed=1))
    source_b = embed(_sentences(SOURCE_B, pool_size, seed=2))
    rng = np.random.default_rng(3)
    rows = [
        "| window items | " + " | ".join(f"{m:.0%} source B" for m in mixes) + " |",
        "|---|" + "---|" * len(mixes),
    ]
    for window_items in window_sizes:
        cells = []
        for mix in mixes:
            flags = []
            for _ in range(trials):
                # Reference and window drawn apart from the pools, fresh each trial (see tabular_quality).
                from_b = round(mix * window_items)
                picked = rng.permutation(len(source_a))[: reference_items + window_items - from_b]
                reference = Window(
                    {}, {"embedding": source_a[picked[:reference_items]]}, np.zeros(reference_items)
                )
                rows_b = source_b[rng.choice(len(source_b), from_b, replace=False)]
                items = np.concatenate([source_a[picked[reference_items:]], rows_b])
                window = Window({}, {"embedding": items}, np.zeros(len(items)))
                flags.append(assess("minilm", 1, reference, window, config).drifted)
            cells.append(f"{_rate(flags):.1f} %")
        rows.append(f"| {window_items} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def serving_cost(duration_s: float, warmup_s: float, rounds: int) -> tuple[str, dict[str, float]]:
    require_wrk()
    contenders = {
        "sampling off": {"sample_rate": 0.0},
        "sampling 0.05 (default)": {"sample_rate": 0.05},
        "sampling 1.0 + capture": {"sample_rate": 1.0, "capture": {"enabled": True}},
    }
    results: dict[str, list[WrkResult]] = {name: [] for name in contenders}
    with tempfile.TemporaryDirectory() as work:
        for round_index in range(rounds):
            # Alternate the order each round so a drift in machine load does not favour one contender.
            order = list(contenders) if round_index % 2 == 0 else list(reversed(contenders))
            for name in order:
                drift = dict(contenders[name])
                if "capture" in drift:
                    drift["capture"] = {**drift["capture"], "dir": str(Path(work) / f"capture-{round_index}")}
                spec = {"models": [{"path": str(MINILM), "drift": drift}]}
                spec_file = Path(work) / "serve.yaml"
                spec_file.write_text(yaml.safe_dump(spec))
                port = free_port()
                url = f"http://127.0.0.1:{port}"
                print(f"  {name} (round {round_index + 1}) …", flush=True)
                with server_process([*MODELFLEET, "--spec", str(spec_file), "--port", str(port)], url):
                    infer = f"{url}/v2/models/{read_manifest(MINILM).name}/infer"
                    run_wrk(infer, TEXT_BODY, 64, warmup_s)
                    results[name].append(run_wrk(infer, TEXT_BODY, 64, duration_s))

    def ok_per_s(result: WrkResult) -> float:
        """Answered requests per second: wrk's rate counts error answers (overload 503s) too."""
        return result.requests_per_s - result.errors / duration_s

    baseline = float(np.median([ok_per_s(r) for r in results["sampling off"]]))
    rows = [
        "| contender | ok requests/s (median of rounds) | each round | p99 ms (median) | error answers | ÷ sampling off |",
        "|---|---|---|---|---|---|",
    ]
    ratios = {}
    for name, runs in results.items():
        rate = float(np.median([ok_per_s(r) for r in runs]))
        p99_ms = float(np.median([r.p99_s for r in runs])) * 1e3
        ratios[name] = rate / baseline if baseline else float("nan")
        each = ", ".join(f"{ok_per_s(r):.0f}" for r in runs)
        rows.append(
            f"| {name} | {rate:.1f} | {each} | {p99_ms:.1f} | {sum(r.errors for r in runs)} | {ratios[name]:.3f}× |"
        )
    return "\n".join(rows), ratios


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--short", action="store_true", help="Fewer trials and 5 s load points (< 2 minutes)."
    )
    parser.add_argument(
        "--trials-scale", type=float, default=1.0, help="multiply the full mode's trial counts"
    )
    parser.add_argument("--rounds", type=int, default=None, help="serving-cost rounds (full mode: 3)")
    parser.add_argument(
        "--text-trials", type=int, default=None, help="MiniLM trials per cell (full mode: 100)"
    )
    args = parser.parse_args()
    load_start = os.getloadavg()
    started = time.perf_counter()
    if args.short:
        tab_trials, text_trials, duration_s, warmup_s, rounds, pool = 40, 10, 5.0, 2.0, 1, 800
        reference_sizes, window_sizes, text_windows = [150, 5000], [100, 300], [100, 200]
    else:
        tab_trials, text_trials, duration_s, warmup_s, rounds, pool = 400, 100, 20.0, 5.0, 3, 2000
        reference_sizes, window_sizes, text_windows = [150, 1000, 10_000], [100, 300, 1000], [100, 200, 400]
        tab_trials, text_trials = (
            round(tab_trials * args.trials_scale),
            round(text_trials * args.trials_scale),
        )
        rounds = args.rounds or rounds
        text_trials = args.text_trials or text_trials
    shifts = [0.0, 0.1, 0.25, 0.5, 1.0]
    mixes = [0.0, 0.1, 0.25, 0.5, 1.0]
    print("tabular detection …", flush=True)
    tabular = tabular_quality(tab_trials, reference_sizes, window_sizes, shifts)
    print("MiniLM embeddings detection …", flush=True)
    text = text_quality(text_trials, 400, text_windows, mixes, pool)
    print("serving cost of sampling (wrk, 64 connections) …", flush=True)
    serving, ratios = serving_cost(duration_s, warmup_s, rounds)
    load_end = os.getloadavg()
    config = DriftConfig()
    body = f"""- mode: {"short" if args.short else "full"}; took {time.perf_counter() - started:.0f} s
- load average (1, 5, 15 min) at start: {", ".join(f"{v:.2f}" for v in load_start)}; at end: {", ".join(f"{v:.2f}" for v in load_end)}
- defaults judged: alpha {config.alpha} ({config.correction}), large_reference_items {config.large_reference_items},
  wasserstein_threshold {config.wasserstein_threshold}, jensen_shannon_threshold {config.jensen_shannon_threshold},
  mmd_permutations {config.mmd_permutations}, mmd_max_items {config.mmd_max_items}

## Tabular (iris-like Gaussians): share of windows flagged as drift

{tab_trials} trials per cell, each with a fresh reference and window (windows below min_window_items
{config.min_window_items} are not judged). Shift 0 is the false-alarm rate (target <= 5 %); the others are detection
rates with feature 2 (petal length) shifted by that many of its standard deviations; its label (a fixed rule on
feature 2) shifts with it.

{tabular}

## Text (MiniLM embeddings, MMD permutation test): share of windows flagged as drift

Reference: 400 embeddings of source A; {text_trials} trials per cell, each with a fresh reference and a window
mixing the given share of source B (different vocabulary) into source A. 0 % is the false-alarm rate.

{text}

## Serving cost of sampling (MiniLM, 64 connections, {duration_s:g} s points after {warmup_s:g} s warm-up, {rounds} round(s))

{serving}

Ratio of the default rate to sampling off: {ratios["sampling 0.05 (default)"]:.3f}× (target >= 0.95×).
"""
    command = "python benchmarks/drift.py" + (" --short" if args.short else "")
    if not args.short and (args.trials_scale != 1.0 or args.rounds):
        command += f" --trials-scale {args.trials_scale:g}" + (
            f" --rounds {args.rounds}" if args.rounds else ""
        )
    print(f"wrote {write_result('drift', command, body)}")


if __name__ == "__main__":
    main()
