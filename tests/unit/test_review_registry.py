"""The review's registry collector on a real SQLite registry: versions pinned, a previous version kept,
lineage, signatures, `verify` clean and a recent export answered from what `registry add / alias / sign /
export` recorded; every registry question UNANSWERED when no registry is given."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from tests.support.linear_model import make_artifact

from modelfleet.config.fleet import FleetSpec
from modelfleet.config.review import ReviewConfig
from modelfleet.registry import Registry, generate_signing_key, load_private_key
from modelfleet.review import collect
from modelfleet.review.engine import run_review
from modelfleet.review.inputs import ReviewInputs
from modelfleet.review.types import Finding, ReviewResult

REGISTRY_CHECKS = (
    "previous_version_kept",
    "lineage_complete",
    "signatures_present",
    "registry_verify_clean",
    "recent_export",
)


def _spec(*models: dict[str, str]) -> FleetSpec:
    return FleetSpec.model_validate(
        {"name": "fleet", "models": list(models), "pools": [{"name": "cpu", "replicas": 2}]}
    )


def _review(registry_root: Path | None, spec: FleetSpec) -> ReviewResult:
    now = time.time()
    registry = None if registry_root is None else collect.read_registry(registry_root, spec, now)
    return run_review(ReviewInputs(now=now, config=ReviewConfig(), spec=spec, registry=registry), "fleet", {})


def _finding(result: ReviewResult, check: str) -> Finding:
    return next(f for f in result.findings() if f.check == check)


@pytest.fixture
def registry(iris_artifact: Path, tmp_path: Path) -> Path:
    root = tmp_path / "registry"
    store = Registry(root, create=True)
    store.add(
        iris_artifact,
        actor="test",
        name="iris",
        source_uri="git+https://example.org/iris@abc123",
        training_data_uri="s3://data/iris.csv",
    )
    store.add(make_artifact(tmp_path / "iris-2", "iris", seed=2), actor="test", name="iris")
    store.alias("iris:1", "prod", actor="test")
    generate_signing_key(tmp_path / "sign.pem", tmp_path / "sign.pub")
    store.sign("iris:1", load_private_key(tmp_path / "sign.pem"), actor="test")
    return root


def test_a_real_registry_answers_the_recovery_and_integrity_questions(registry: Path, tmp_path: Path) -> None:
    spec = _spec({"name": "iris", "ref": "iris@prod"})
    evidence = collect.read_registry(registry, spec, time.time())
    [version] = evidence.versions
    assert (version.model, version.ref, version.version_count) == ("iris", "iris:1", 2)
    assert version.lineage_missing == () and version.signed and len(version.model_sha256) == 64
    assert evidence.verify_problems == () and evidence.verified_versions == 2
    assert evidence.last_export_age_s is None  # never exported yet

    before = _review(registry, spec)
    for check in ("versions_pinned", "previous_version_kept", "lineage_complete", "signatures_present"):
        assert _finding(before, check).status == "pass", _finding(before, check)
    assert _finding(before, "previous_version_kept").evidence[0].observed == "2 version(s) registered"
    assert _finding(before, "registry_verify_clean").evidence[0].observed == "2 version(s) verified clean"
    export = _finding(before, "recent_export")
    assert export.status == "fail" and export.evidence[0].observed == "never exported"

    Registry(registry, create=False).export_bundle(tmp_path / "bundle.tar", actor="test")
    after = _review(registry, spec)
    export = _finding(after, "recent_export")
    assert export.status == "pass" and export.evidence[0].observed.startswith("last export 0.0 h ago")
    assert export.evidence[0].where == f"{registry}/audit.jsonl registry.export"
    assert {q.id: q.risk for q in after.questions}["model_recovery"] == "NONE"


def test_the_latest_version_without_lineage_or_signature_and_a_path_model_fail(
    registry: Path, tmp_path: Path
) -> None:
    spec = _spec({"name": "iris", "ref": "iris:2"}, {"name": "other", "path": str(tmp_path / "iris-2")})
    result = _review(registry, spec)
    lineage = _finding(result, "lineage_complete")
    assert lineage.status == "fail"
    observed = {e.where.split(" ")[0]: e.observed for e in lineage.evidence}
    assert observed["iris:2"] == "lineage lacks source_uri, training_data_uri"
    assert observed["fleet"] == "served from a path, not from the registry"  # model `other`
    assert _finding(result, "signatures_present").status == "fail"
    assert _finding(result, "versions_pinned").status == "fail"  # `other` is served from a path


def test_a_damaged_blob_makes_verify_fail_with_the_version_named(registry: Path) -> None:
    blob = next(p for p in (registry / "blobs").rglob("*") if p.is_file() and p.stat().st_size > 1000)
    blob.write_bytes(b"tampered")
    result = _review(registry, _spec({"name": "iris", "ref": "iris@prod"}))
    verify = _finding(result, "registry_verify_clean")
    assert verify.status == "fail" and verify.risk == "HIGH"
    assert "corrupt blob" in verify.evidence[0].observed and "iris:" in verify.evidence[0].observed


def test_without_a_registry_every_registry_question_is_unanswered() -> None:
    result = _review(None, _spec({"name": "iris", "ref": "iris@prod"}))
    for check in REGISTRY_CHECKS:
        finding = _finding(result, check)
        assert (finding.status, finding.risk) == ("unanswered", "UNANSWERED"), finding
        assert "--registry" in finding.note and finding.evidence == ()
