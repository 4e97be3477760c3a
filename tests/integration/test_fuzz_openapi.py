"""Schemathesis against the server's own OpenAPI document, on a real server serving MiniLM and iris.

Every generated request must get a documented status with a documented body and content type, and
never a 5xx: a 500 for a client's mistake is a bug. Bounded: a fixed number of examples per operation
and no shrinking past a deadline (the figures printed by `-s` say how many cases ran).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)
from tests.support.servers import RunningServer, serve

EXAMPLES_PER_OPERATION = 150
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


@pytest.fixture(scope="module")
def fuzzed_server(
    tmp_path_factory: pytest.TempPathFactory, minilm_fp32_artifact: Path, iris_artifact: Path
) -> Iterator[RunningServer]:
    folder = tmp_path_factory.mktemp("fuzz")
    with serve(["--model", str(minilm_fp32_artifact), "--model", str(iris_artifact)], folder) as server:
        yield server


@pytest.fixture(scope="module")
def api_schema(fuzzed_server: RunningServer) -> schemathesis.schemas.BaseSchema:
    schema = schemathesis.openapi.from_url(f"{fuzzed_server.url}/openapi.json")
    schema.config.update(base_url=fuzzed_server.url)
    # Unloading a served model would change what every later case sees; load/unload have their own tests.
    return schema.exclude(path_regex="^/v2/repository/models/")


def test_the_document_lists_each_served_model(fuzzed_server: RunningServer) -> None:
    document = httpx.get(f"{fuzzed_server.url}/openapi.json").json()
    assert document["openapi"].startswith("3.1")
    assert "/v2/models/iris/infer" in document["paths"]
    iris = document["paths"]["/v2/models/iris/infer"]["post"]["requestBody"]["content"]["application/json"]
    assert iris["schema"]["properties"]["inputs"]["minItems"] == 1


def test_every_generated_request_gets_a_documented_answer(
    api_schema: schemathesis.schemas.BaseSchema,
) -> None:
    # One hypothesis run per operation of the live document (schemathesis' pytest plugin does not work
    # with pytest 9, so the operations are walked here); every failure is collected, then reported.
    failures: list[str] = []
    cases = 0
    for result in api_schema.get_all_operations():
        operation = result.ok()

        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
            database=None,
        )
        @given(case=operation.as_strategy())
        def run(case: schemathesis.Case) -> None:
            nonlocal cases
            cases += 1
            case.call_and_validate(checks=CHECKS, timeout=30)

        try:
            run()
        except Exception as exc:  # a check failed: keep going so one run reports every operation
            failures.append(f"{operation.label}: {str(exc)[:1500]}")
    print(f"schemathesis: {cases} generated requests")
    assert not failures, "\n\n".join(failures)
    assert cases >= 1000
