"""apply/diff/delete offline: normalising live objects, diffs, and clear errors without a cluster."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelfleet.errors import Unavailable
from modelfleet.fleet.apply import ObjectResult, connect, diff_text, normalize


def _configmap(data: str, **metadata: object) -> dict[str, object]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "c", "namespace": "n", **metadata},
        "data": {"k": data},
    }


def test_server_owned_fields_do_not_count_as_changes() -> None:
    live = _configmap(
        "v",
        resourceVersion="42",
        uid="u-1",
        generation=3,
        creationTimestamp="2024-01-01T00:00:00Z",
        managedFields=[{"manager": "modelfleet"}],
        annotations={"kubectl.kubernetes.io/last-applied-configuration": "{}"},
    )
    live["status"] = {"phase": "x"}
    assert normalize(live) == _configmap("v")
    assert diff_text(live, _configmap("v"), "ConfigMap/n/c") == ""


def test_a_changed_field_shows_as_a_unified_diff() -> None:
    text = diff_text(_configmap("old"), _configmap("new"), "ConfigMap/n/c")
    assert text.startswith("--- live/ConfigMap/n/c\n+++ desired/ConfigMap/n/c\n")
    assert "-  k: old" in text and "+  k: new" in text


def test_a_new_object_diffs_against_nothing() -> None:
    text = diff_text(None, _configmap("v"), "ConfigMap/n/c")
    assert "+kind: ConfigMap" in text


def test_results_serialise_for_json_output() -> None:
    result = ObjectResult("Deployment", "d", "ns", "configured", "diff")
    assert result.to_json() == {
        "kind": "Deployment",
        "name": "d",
        "namespace": "ns",
        "action": "configured",
        "diff": "diff",
    }


def test_missing_kubeconfig_is_a_one_line_unavailable_error(tmp_path: Path) -> None:
    with pytest.raises(Unavailable) as caught:
        connect(kubeconfig=tmp_path / "no-such-kubeconfig")
    assert caught.value.exit_code == 5
    assert "no usable Kubernetes configuration" in caught.value.message
    assert "\n" not in caught.value.message


def test_kubeconfig_without_contexts_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "kubeconfig"
    config.write_text(
        "apiVersion: v1\nkind: Config\nclusters: []\ncontexts: []\nusers: []\n", encoding="utf-8"
    )
    with pytest.raises(Unavailable, match="no usable Kubernetes configuration"):
        connect(kubeconfig=config)
