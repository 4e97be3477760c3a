"""Model registry: immutable numbered versions with lineage, aliases with history, signed and verified loads.

Library use::

    from modelfleet.registry import Registry, registry_root
    registry = Registry(registry_root())   # $MODELFLEET_REGISTRY or ~/.modelfleet/registry, as the CLI
    version = registry.add(Path("artifacts/iris"), actor="ci")
    registry.promote(version.ref, actor="ci", reason="passed canary")
    folder = registry.materialize("iris@production")   # every sha256 verified
"""

from modelfleet.config.serve import registry_root
from modelfleet.registry.lineage import digest_path
from modelfleet.registry.models import (
    AliasEvent,
    BlobProblem,
    ExportReport,
    FileEntry,
    GcReport,
    ImportReport,
    Lineage,
    ModelSummary,
    ModelVersion,
    SignatureRecord,
    VerifyReport,
)
from modelfleet.registry.signing import generate_signing_key, load_private_key, load_public_key
from modelfleet.registry.store import Registry

__all__ = [
    "AliasEvent",
    "BlobProblem",
    "ExportReport",
    "FileEntry",
    "GcReport",
    "ImportReport",
    "Lineage",
    "ModelSummary",
    "ModelVersion",
    "Registry",
    "SignatureRecord",
    "VerifyReport",
    "digest_path",
    "generate_signing_key",
    "load_private_key",
    "load_public_key",
    "registry_root",
]
