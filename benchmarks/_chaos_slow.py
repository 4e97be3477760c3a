"""Child processes of the chaos benchmark for its two "slow" faults.

python benchmarks/_chaos_slow.py serve --spec SERVE.yaml --slow NAME --factor 10
    A real `modelfleet serve` (same spec, same code path) whose model NAME becomes FACTOR times
    slower after SIGUSR1 (and normal again after SIGUSR2): each of its model runs is followed by a
    sleep of (FACTOR - 1) times what the run took. The delay is injected here, in the benchmark,
    by wrapping the loaded model's predict; library code has no such hook.

python benchmarks/_chaos_slow.py headers --host H --port P --count N --interval-s S --observe-s T --out F
    N connections that each send a partial request header, one byte every S seconds, and never
    finish it. Prints "connected N failed M" once all are open, then records when the server closes
    each (EOF, reset, or an answer) for up to T seconds, and writes a JSON summary to F.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import time
from pathlib import Path
from typing import Any


def serve_slow(spec_path: Path, slow_model: str, factor: float) -> int:
    import modelfleet.server.repository as repository
    from modelfleet.config.base import load_spec
    from modelfleet.config.serve import ServeSpec
    from modelfleet.server.runner import serve

    slowed = {"on": False}
    signal.signal(signal.SIGUSR1, lambda *_: slowed.__setitem__("on", True))
    signal.signal(signal.SIGUSR2, lambda *_: slowed.__setitem__("on", False))
    original = repository.load_model

    def load_model(*args: Any, **kwargs: Any) -> Any:
        model = original(*args, **kwargs)
        if model.name == slow_model:
            predict = model.predict

            def slow_predict(inputs: Any) -> Any:
                started = time.perf_counter()
                outputs = predict(inputs)
                if slowed["on"]:
                    time.sleep((factor - 1.0) * (time.perf_counter() - started))
                return outputs

            model.predict = slow_predict
        return model

    repository.load_model = load_model  # type: ignore[assignment]
    return serve(load_spec(spec_path, ServeSpec))


async def _one_slow_connection(
    host: str, port: int, path: str, interval_s: float, observe_s: float, record: dict[str, Any]
) -> None:
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout=10.0)
    except (OSError, TimeoutError) as exc:
        record["kind"] = f"connect failed: {type(exc).__name__}"
        return
    started = time.monotonic()
    record["kind"] = "open"
    writer.write(f"POST {path} HTTP/1.1\r\nHost: {host}\r\nX-Slow-Header: ".encode())
    deadline = started + observe_s
    try:
        while time.monotonic() < deadline:
            try:
                data = await asyncio.wait_for(reader.read(65536), timeout=interval_s)
            except TimeoutError:
                writer.write(b"a")
                await writer.drain()
                continue
            if not data:
                record["kind"] = "eof"
                break
            record.setdefault("answer", data.split(b"\r\n", 1)[0].decode("latin-1")[:80])
    except OSError as exc:  # reset, broken pipe
        record["kind"] = f"reset: {type(exc).__name__}"
    finally:
        if record["kind"] != "open":
            record["closed_after_s"] = time.monotonic() - started
        writer.close()


async def _slow_headers(args: argparse.Namespace) -> dict[str, Any]:
    records: list[dict[str, Any]] = [{} for _ in range(args.count)]
    tasks = []
    # Open in batches so the listen backlog is not what is being measured.
    for start in range(0, args.count, 100):
        for index in range(start, min(start + 100, args.count)):
            tasks.append(
                asyncio.create_task(
                    _one_slow_connection(
                        args.host, args.port, args.path, args.interval_s, args.observe_s, records[index]
                    )
                )
            )
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.2)
    failed = sum(1 for r in records if r.get("kind", "").startswith("connect failed"))
    print(f"connected {args.count - failed} failed {failed}", flush=True)
    await asyncio.wait(tasks, timeout=args.observe_s + 15.0)
    kinds: dict[str, int] = {}
    for record in records:
        kind = record.get("kind", "unknown")
        kinds[kind] = kinds.get(kind, 0) + 1
    answers: dict[str, int] = {}
    for record in records:
        if "answer" in record:
            answers[record["answer"]] = answers.get(record["answer"], 0) + 1
    return {
        "count": args.count,
        "connect_failed": failed,
        "kinds": kinds,
        "answers": answers,
        "closed_after_s": sorted(r["closed_after_s"] for r in records if "closed_after_s" in r),
        "still_open": kinds.get("open", 0),
        "observe_s": args.observe_s,
        "interval_s": args.interval_s,
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    serve_parser = commands.add_parser("serve")
    serve_parser.add_argument("--spec", type=Path, required=True)
    serve_parser.add_argument("--slow", required=True)
    serve_parser.add_argument("--factor", type=float, default=10.0)
    headers = commands.add_parser("headers")
    headers.add_argument("--host", default="127.0.0.1")
    headers.add_argument("--port", type=int, required=True)
    headers.add_argument("--path", default="/v2/models/minilm/infer")
    headers.add_argument("--count", type=int, default=1000)
    headers.add_argument("--interval-s", type=float, default=0.5)
    headers.add_argument("--observe-s", type=float, default=20.0)
    headers.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    if args.command == "serve":
        return serve_slow(args.spec, args.slow, args.factor)
    summary = asyncio.run(_slow_headers(args))
    args.out.write_text(json.dumps(summary), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
