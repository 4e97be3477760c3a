"""The contender in the style of the AWS guidance: FastAPI + uvicorn, one request = one model run.

No batching: each request tokenizes and runs ONNX Runtime on its own, with the same session settings
as modelfleet (both use modelfleet.runtime to load the model, so the model work is identical and only
the serving differs). `--constant` instead answers every request with a fixed V2 response: the
floor of what FastAPI costs per request, for the pure serving-overhead comparison.

    python benchmarks/reference_server.py --artifact DIR --port 8100
    python benchmarks/reference_server.py --constant --port 8101
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np
import uvicorn
from fastapi import FastAPI, HTTPException
from pydantic import BaseModel

from modelfleet.runtime import load_model
from modelfleet.runtime.onnx import default_intra_op_threads


class V2Input(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    data: list[Any]


class V2Request(BaseModel):
    inputs: list[V2Input]


def make_app(artifact: Path | None) -> FastAPI:
    app = FastAPI()
    if artifact is None:
        constant = {
            "model_name": "iris",
            "model_version": "1",
            "outputs": [
                {"name": "label", "datatype": "INT64", "shape": [1], "data": [0]},
                {"name": "probabilities", "datatype": "FP32", "shape": [1, 3], "data": [0.98, 0.02, 0.0]},
            ],
        }

        @app.post("/v2/models/{name}/infer")
        def constant_infer(name: str, request: V2Request) -> dict[str, Any]:
            return constant

        return app

    model = load_model(artifact, intra_op_threads=default_intra_op_threads(1))
    specs = {spec.name: spec for spec in model.inputs}

    # A plain `def` route: FastAPI runs it in its thread pool, one request per model run, as in the guidance.
    @app.post("/v2/models/{name}/infer")
    def infer(name: str, request: V2Request) -> dict[str, Any]:
        if name != model.name:
            raise HTTPException(404, f"model {name} not found")
        inputs = {}
        for tensor in request.inputs:
            spec = specs[tensor.name]
            if spec.datatype.value == "BYTES":
                array = np.array([str(item).encode() for item in tensor.data], dtype=object).reshape(
                    tensor.shape
                )
            else:
                array = np.asarray(tensor.data, dtype=spec.datatype.numpy_dtype).reshape(tensor.shape)
            inputs[tensor.name] = array
        outputs = model.predict(inputs)
        return {
            "model_name": model.name,
            "model_version": model.version,
            "outputs": [
                {"name": key, "datatype": "FP32", "shape": list(value.shape), "data": value.ravel().tolist()}
                for key, value in outputs.items()
            ],
        }

    return app


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--artifact", type=Path)
    parser.add_argument("--constant", action="store_true")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8100)
    args = parser.parse_args()
    if not args.constant and args.artifact is None:
        parser.error("give --artifact DIR or --constant")
    uvicorn.run(
        make_app(None if args.constant else args.artifact),
        host=args.host,
        port=args.port,
        log_level="warning",
    )


if __name__ == "__main__":
    main()
