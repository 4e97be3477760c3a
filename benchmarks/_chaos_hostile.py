"""The chaos benchmark's hostile-input battery: the cases of issue 10 plus seeded generated ones.

    python benchmarks/_chaos_hostile.py --target NAME=URL [--target ...] --model minilm --input text \
        --names 300 --generated 300 --seed 0 --deadline-s 40 --out battery.json

Every case goes, one request per connection, to every target in turn (a router and a model server
directly). Prints "ready N" once the cases are built, then sends them; writes every outcome (status,
seconds, whether a 4xx carried a JSON `error`) to the output file. Sending stops at the deadline
(cases not sent are counted), so the battery is bounded however the servers behave.
"""

from __future__ import annotations

import argparse
import gzip
import http.client
import json
import random
import re
import string
import struct
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

_REQUEST_TIMEOUT_S = 12.0  # above the servers' default 10 s deadline, so a 504 is seen as one


@dataclass
class Case:
    name: str
    body: bytes
    path_model: str | None = None  # None: the battery's model
    headers: dict[str, str] = field(default_factory=dict)
    generated: bool = False
    heavy: bool = False  # sent last: on a server without limits it can hold a model for minutes


def _json(document: Any) -> bytes:
    return json.dumps(document, separators=(",", ":")).encode()


def _infer(input_name: str, datatype: str, shape: Any, data: Any, **extra: Any) -> bytes:
    return _json(
        {"inputs": [{"name": input_name, "datatype": datatype, "shape": shape, "data": data}], **extra}
    )


def _binary_bytes_body(input_name: str, elements: list[bytes]) -> tuple[bytes, dict[str, str]]:
    payload = b"".join(struct.pack("<I", len(e)) + e for e in elements)
    header = _json(
        {
            "inputs": [
                {
                    "name": input_name,
                    "datatype": "BYTES",
                    "shape": [len(elements)],
                    "parameters": {"binary_data_size": len(payload)},
                }
            ]
        }
    )
    return header + payload, {"Inference-Header-Content-Length": str(len(header))}


def issue_cases(input_name: str, random_names: int, rng: random.Random) -> list[Case]:
    """The inputs issue 10 names, each as it was reported."""
    ordinary = _infer(input_name, "BYTES", [1], ["an ordinary sentence"])
    non_utf8, non_utf8_headers = _binary_bytes_body(input_name, [b"\xff\xfe\xfd bad utf-8"])
    cases = [
        Case(
            "BYTES data [300000000] (an int where a string belongs)",
            _infer(input_name, "BYTES", [1], [300_000_000]),
            heavy=True,
        ),
        Case('[["a"], "b"] with shape [2]', _infer(input_name, "BYTES", [2], [["a"], "b"])),
        Case(
            "one 20 MB string",
            _infer(input_name, "BYTES", [1], ["lorem ipsum " * (20_000_000 // 12)]),
            heavy=True,
        ),
        Case("100,000 empty strings", _infer(input_name, "BYTES", [100_000], [""] * 100_000), heavy=True),
        Case("data [[1],2]", _infer(input_name, "BYTES", [2], [[1], 2])),
        Case(
            "shape [1,0,9223372036854775807], empty data", _infer(input_name, "BYTES", [1, 0, 2**63 - 1], [])
        ),
        Case(
            "outputs[].parameters as a list",
            _infer(input_name, "BYTES", [1], ["hi"], outputs=[{"name": "embedding", "parameters": []}]),
        ),
        Case("16 MB header value", ordinary, headers={"X-Big": "a" * (16 << 20)}, heavy=True),
        Case("model name of 100 KB", ordinary, path_model="m" * 100_000),
    ]
    # Several, so that some land in a batch with ordinary requests (a bad item must fail alone).
    cases += [
        Case(f"non-UTF-8 BYTES element, binary extension #{i + 1}", non_utf8, headers=non_utf8_headers)
        for i in range(10)
    ]
    alphabet = string.ascii_letters + string.digits + "-_."
    # Unknown names with a valid body (404) and with a malformed one (a 400 must not label metrics
    # with a name no model has either).
    malformed = _json({"inputs": 5})
    cases += [
        Case(
            "random model name" + (", malformed body" if number % 2 else ""),
            malformed if number % 2 else ordinary,
            path_model="".join(rng.choice(alphabet) for _ in range(rng.randint(4, 40))),
        )
        for number in range(random_names)
    ]
    cases.append(Case("model name of 100 KB, malformed body", malformed, path_model="n" * 100_000))
    return cases


_HOSTILE_VALUES: list[Any] = [
    None, True, 0, -1, 1.5, 2**63, -(2**63) - 1, 1e308, "", "x", "\u0000", "é" * 50, [], {}, [[]], [None],
    [[1], 2], [["a"], "b"], ["ok"], [1, 2, 3], {"a": 1}, "9" * 400,
]  # fmt: skip
_SHAPES: list[Any] = [
    [1], [0], [-1], [2], [1, 1], [2**63 - 1], [2**31, 2**31], [1, 0, 2**63 - 1], [], "1", [1.5], [[1]],
    [None], [True], [10**6], None,
]  # fmt: skip
_DATATYPES: list[Any] = [
    "BYTES",
    "FP32",
    "FP16",
    "INT64",
    "INT8",
    "UINT8",
    "BOOL",
    "bytes",
    "STRING",
    7,
    None,
]


def _structural(rng: random.Random, input_name: str) -> bytes:
    tensor: dict[str, Any] = {}
    if rng.random() < 0.9:
        tensor["name"] = rng.choice([input_name, input_name, "", "other", 5, None, ["text"]])
    if rng.random() < 0.9:
        tensor["datatype"] = rng.choice(_DATATYPES)
    if rng.random() < 0.9:
        tensor["shape"] = rng.choice(_SHAPES)
    if rng.random() < 0.9:
        choice = rng.random()
        if choice < 0.5:
            tensor["data"] = rng.choice(_HOSTILE_VALUES)
        elif choice < 0.8:
            tensor["data"] = [rng.choice(_HOSTILE_VALUES) for _ in range(rng.randint(1, 8))]
        else:
            tensor["data"] = [""] * rng.randint(0, 2000)
    if rng.random() < 0.3:
        tensor["parameters"] = rng.choice(
            [[], "x", {"binary_data_size": rng.choice([-1, 0, 10**12, "3", None])}, {"content_type": 5}]
        )
    document: dict[str, Any] = {"inputs": rng.choice([[tensor], [tensor, tensor], tensor, [], None, "x"])}
    if rng.random() < 0.3:
        document["outputs"] = rng.choice(
            [
                [],
                [{}],
                [{"name": 5}],
                [{"name": "embedding", "parameters": rng.choice([[], 1, {"binary_data": "y"}])}],
                {},
            ]
        )
    if rng.random() < 0.3:
        document["parameters"] = rng.choice([[], {"timeout": rng.choice([-1, 0, "1", 1e30])}, "p", None])
    if rng.random() < 0.2:
        document["id"] = rng.choice([5, [], "i" * 1000, None])
    return _json(document)


def _mutated(rng: random.Random, valid: bytes) -> bytes:
    data = bytearray(valid)
    for _ in range(rng.randint(1, 4)):
        position = rng.randrange(len(data) + 1)
        action = rng.randrange(5)
        if action == 0 and data:
            data[min(position, len(data) - 1)] = rng.randrange(256)
        elif action == 1:
            del data[position : position + rng.randint(1, 16)]
        elif action == 2:
            data[position:position] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
        elif action == 3:
            data[position:position] = data[position : position + rng.randint(1, 64)] * rng.randint(2, 50)
        else:
            del data[position:]
    return bytes(data)


def _binary(rng: random.Random, input_name: str) -> tuple[bytes, dict[str, str]]:
    payload = bytes(rng.randrange(256) for _ in range(rng.randint(0, 256)))
    if rng.random() < 0.5:  # well-formed length prefixes around random (often non-UTF-8) bytes
        elements = [payload[i : i + 7] for i in range(0, len(payload), 7)] or [b""]
        payload = b"".join(struct.pack("<I", len(e)) + e for e in elements)
        shape: Any = [len(elements)]
    else:
        shape = rng.choice(_SHAPES)
    declared = rng.choice([len(payload), len(payload) + 1, max(0, len(payload) - 1), 0, 2**40, -5])
    header = _json(
        {
            "inputs": [
                {
                    "name": input_name,
                    "datatype": rng.choice(["BYTES", "BYTES", "FP32", "INT64"]),
                    "shape": shape,
                    "parameters": {"binary_data_size": declared},
                }
            ]
        }
    )
    length = rng.choice(
        [str(len(header)), str(len(header)), "0", "-1", str(2**40), "abc", str(len(header) + 3)]
    )
    return header + payload, {"Inference-Header-Content-Length": length}


def generated_cases(input_name: str, count: int, rng: random.Random) -> list[Case]:
    """Seeded malformed bodies: structural (hostile values per field), byte mutations of a valid
    body, binary-extension bodies with random sizes, and gzip that is not gzip."""
    valid = _infer(input_name, "BYTES", [2], ["first sentence", "second one"])
    cases = []
    for number in range(count):
        kind = number % 4
        if kind == 0:
            cases.append(Case("generated: structural", _structural(rng, input_name), generated=True))
        elif kind == 1:
            cases.append(Case("generated: mutated JSON", _mutated(rng, valid), generated=True))
        elif kind == 2:
            body, headers = _binary(rng, input_name)
            cases.append(Case("generated: binary extension", body, headers=headers, generated=True))
        else:
            body = gzip.compress(valid, mtime=0)  # no timestamp: the same seed gives the same bytes
            body = _mutated(rng, body) if rng.random() < 0.7 else body[: rng.randrange(len(body))]
            cases.append(
                Case("generated: bad gzip", body, headers={"Content-Encoding": "gzip"}, generated=True)
            )
    return cases


def send(url: str, model: str, case: Case) -> dict[str, Any]:
    parts = urlsplit(url)
    path = f"/v2/models/{quote(case.path_model or model, safe='')}/infer"
    started = time.monotonic()
    outcome: dict[str, Any] = {"case": case.name, "generated": case.generated}
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=_REQUEST_TIMEOUT_S)
    try:
        connection.request(
            "POST", path, body=case.body, headers={"Content-Type": "application/json", **case.headers}
        )
        response = connection.getresponse()
        body = response.read(1 << 20)
        outcome["status"] = response.status
        if 400 <= response.status < 500:
            try:
                document = json.loads(body)
                outcome["json_error"] = isinstance(document, dict) and isinstance(document.get("error"), str)
            except ValueError:
                outcome["json_error"] = False
        if response.status >= 500:
            outcome["body"] = body[:300].decode("utf-8", "replace")
    except TimeoutError:
        outcome["status"], outcome["error"] = 0, "timeout"
    except (OSError, ConnectionError, http.client.HTTPException) as exc:
        outcome["status"], outcome["error"] = 0, f"closed: {type(exc).__name__}"
    finally:
        connection.close()
    outcome["seconds"] = round(time.monotonic() - started, 4)
    return outcome


def metrics_snapshot(url: str) -> dict[str, Any]:
    """Size of a target's /metrics and the model label values in it."""
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=_REQUEST_TIMEOUT_S)
    try:
        connection.request("GET", "/metrics")
        response = connection.getresponse()
        text = response.read().decode("utf-8", "replace")
        status = response.status
    except (OSError, http.client.HTTPException) as exc:
        return {"status": 0, "error": type(exc).__name__}
    finally:
        connection.close()
    labels = sorted(set(re.findall(r'model="((?:[^"\\]|\\.)*)"', text)))
    series = sum(1 for line in text.splitlines() if line and not line.startswith("#"))
    return {
        "status": status,
        "bytes": len(text),
        "series": series,
        "model_labels": [label[:80] for label in labels[:50]],
        "model_label_count": len(labels),
    }


def run_battery(targets: dict[str, str], model: str, cases: list[Case], deadline_s: float) -> dict[str, Any]:
    """Every case to every target, one thread per target, until done or the deadline. Each target's
    /metrics is read before the first case and again right after the last unknown-name case."""
    deadline = time.monotonic() + deadline_s
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in targets}
    metrics: dict[str, dict[str, Any]] = {name: {} for name in targets}
    last_name_case = max((i for i, c in enumerate(cases) if c.path_model is not None), default=-1)

    def worker(name: str, url: str) -> None:
        metrics[name]["before"] = metrics_snapshot(url)
        for index, case in enumerate(cases):
            if time.monotonic() >= deadline:
                break
            results[name].append(send(url, model, case))
            if index == last_name_case:
                metrics[name]["after_names"] = metrics_snapshot(url)

    threads = [threading.Thread(target=worker, args=item, daemon=True) for item in targets.items()]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(deadline_s + _REQUEST_TIMEOUT_S + 5)
    return {
        "cases": len(cases),
        "seconds": round(time.monotonic() - started, 2),
        "results": results,
        "metrics": metrics,
        "not_sent": {name: len(cases) - len(rows) for name, rows in results.items()},
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--target", action="append", required=True, help="NAME=URL; repeat.")
    parser.add_argument("--model", default="minilm")
    parser.add_argument("--input", default="text")
    parser.add_argument("--names", type=int, default=300, help="Requests to random model names.")
    parser.add_argument("--generated", type=int, default=300, help="Generated malformed requests.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--deadline-s", type=float, default=40.0)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    issue = issue_cases(args.input, args.names, rng)
    # Cheap cases first, so that what they measure (e.g. /metrics after unknown names) is measured
    # before a heavy case can take a server down.
    named = [c for c in issue if c.path_model is not None]
    cases = named + [c for c in issue if c.path_model is None and not c.heavy]
    cases += generated_cases(args.input, args.generated, rng) + [c for c in issue if c.heavy]
    targets = dict(item.split("=", 1) for item in args.target)
    print(f"ready {len(cases)}", flush=True)
    summary = run_battery(targets, args.model, cases, args.deadline_s)
    args.out.write_text(json.dumps(summary), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
