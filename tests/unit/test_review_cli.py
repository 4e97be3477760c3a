"""`modelfleet review`'s bad input in process (click's CliRunner captures the streams; `main` maps errors to
exit codes): one-line errors on stderr and the exit codes docs/review.md documents."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from tests.support.linear_model import make_artifact
from tests.support.ports import refused_port

from modelfleet.cli.main import main
from modelfleet.fleet.state import FleetPaths, FleetState, ProcessRecord, write_state

ROOT = Path(__file__).resolve().parents[2]
EKS = str(ROOT / "examples" / "fleet-eks-guidance.yaml")


def _cli(*args: str) -> tuple[int, str, str]:
    with CliRunner().isolation() as (stdout, stderr, _):
        try:
            main(["review", *args])
            code = 0
        except SystemExit as exc:
            code = int(exc.code or 0)
        return code, stdout.getvalue().decode(), stderr.getvalue().decode()


def _one_line_error(code: int, out: str, err: str, expected: int, match: str) -> None:
    assert code == expected, out + err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("error: ") and match in lines[0], lines[0]


@pytest.fixture
def unreachable_fleet(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """A local fleet's saved state whose router port refuses connections (the fleet went down)."""
    stack = contextlib.ExitStack()
    spec = tmp_path / "fleet.yaml"
    spec.write_text(
        yaml.safe_dump(
            {
                "name": "downfleet",
                "models": [{"name": "iris", "path": str(make_artifact(tmp_path / "iris", "iris"))}],
                "pools": [{"name": "cpu", "replicas": 2}],
            }
        )
    )
    state_root = tmp_path / "state"
    paths = FleetPaths.for_fleet("downfleet", state_root)
    paths.root.mkdir(parents=True)
    port = stack.enter_context(refused_port())
    url = f"http://127.0.0.1:{port}"
    router = ProcessRecord(id="router", kind="router", port=1, url=url, log_file="router.log")
    now = time.time()
    state = FleetState(
        fleet="downfleet",
        spec_path=str(spec),
        state_dir=str(paths.root),
        router_url=url,
        models=["iris"],
        created_at=now,
        updated_at=now,
        processes=[router],
    )
    write_state(paths, state)
    with stack:
        yield spec, state_root


def test_a_spec_that_does_not_validate(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: Bad_Name\nmodels: []\n")
    _one_line_error(*_cli(str(bad)), 2, str(bad))


def test_a_results_file_of_another_schema(tmp_path: Path) -> None:
    (tmp_path / "x.json").write_text('{"hello": 1}')
    _one_line_error(*_cli(EKS, "--results", str(tmp_path)), 2, "not a bench, tune or chaos result")


def test_missing_target_and_results_folder(tmp_path: Path) -> None:
    _one_line_error(*_cli(str(tmp_path / "nope.yaml")), 3, "does not exist")
    _one_line_error(*_cli(EKS, "--results", str(tmp_path / "none")), 3, "does not exist")


def test_live_without_a_local_fleet_and_bad_flags(tmp_path: Path) -> None:
    _one_line_error(
        *_cli(EKS, "--live", "--state-dir", str(tmp_path)), 2, "--live needs a running local fleet"
    )
    _one_line_error(*_cli(EKS, "--drill"), 2, "--drill needs --live")
    _one_line_error(*_cli(EKS, "--format", "pdf"), 2, "--format 'pdf'")
    _one_line_error(*_cli(EKS, "--fail-on", "low"), 2, "--fail-on 'low'")


def test_an_unreachable_fleet_with_live(unreachable_fleet: tuple[Path, Path]) -> None:
    spec, state_root = unreachable_fleet
    _one_line_error(*_cli(str(spec), "--live", "--state-dir", str(state_root)), 5, "is unreachable")


def test_a_protected_fleet_refuses_drills_without_force(unreachable_fleet: tuple[Path, Path]) -> None:
    spec, state_root = unreachable_fleet
    data = yaml.safe_load(spec.read_text())
    spec.write_text(yaml.safe_dump({**data, "review": {"protected": True}}))
    args = (str(spec), "--live", "--drill", "--state-dir", str(state_root))
    _one_line_error(*_cli(*args), 7, "review.protected true")
    # With --force the drill is let through: it then finds the router down (exit 5), not the protection.
    _one_line_error(*_cli(*args, "--force"), 5, "is unreachable")
