"""Load an artifact folder into a runtime Model, verifying every file's hash first."""

from __future__ import annotations

from pathlib import Path

from modelfleet.manifest import read_manifest, verify_files
from modelfleet.runtime.base import Model


def load_model(
    artifact_dir: Path,
    intra_op_threads: int,
    name: str | None = None,
    version: str | None = None,
    verify: bool = True,
    length_grouping: bool = True,
    prepack_weights: bool = True,
    spin_threads: bool = True,
) -> Model:
    """Read the manifest, check the sha256 of every file, and open the model for the artifact's target.

    `name` and `version` override the manifest's (a registry numbers versions itself); `length_grouping`
    (text models) splits a batch into runs of similar length, or pads it whole into one run;
    `prepack_weights` lets ONNX Runtime repack MatMul weights for its kernels (faster; no memory cost measured);
    `spin_threads` lets its intra-op threads spin within a run (faster when the session runs alone).
    """
    manifest = read_manifest(artifact_dir)
    if verify:
        verify_files(artifact_dir, manifest)
    from modelfleet.runtime.onnx import OnnxModel

    return OnnxModel(
        artifact_dir,
        manifest,
        intra_op_threads=intra_op_threads,
        name=name,
        version=version,
        length_grouping=length_grouping,
        prepack_weights=prepack_weights,
        spin_threads=spin_threads,
    )
