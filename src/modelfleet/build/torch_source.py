"""Recognise PyTorch sources without importing torch or running any of their code.

A TorchScript file (torch.jit.save) is a zip whose top folder holds `constants.pkl` and a `code/` tree
of TorchScript; a plain torch.save file is a zip (or, in the old format, a bare pickle) with only
`data.pkl` and tensor data: pickled Python objects and no graph, so it is refused here. A
`module:function` source names Python code: its module file is found on the search path (the current
folder, then sys.path) the way the import system would, without importing it, so the file can be
hashed before anyone decides to trust it.
"""

from __future__ import annotations

import re
import sys
import zipfile
from dataclasses import dataclass
from importlib.machinery import PathFinder
from pathlib import Path
from typing import Literal

from modelfleet.errors import InvalidInput, NotFound

TORCH_SUFFIXES = {".pt", ".pth", ".ts"}
_CALLABLE = re.compile(r"^(?P<module>[^:]+):(?P<function>[A-Za-z_][A-Za-z0-9_]*)$")
_DOTTED = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
_TORCHSCRIPT_ENTRY = re.compile(r"^[^/]+/(constants\.pkl$|code/)")
_TORCH_SAVE_ENTRY = re.compile(r"^[^/]+/data\.pkl$")

ZipKind = Literal["torchscript", "torch.save"]


@dataclass(frozen=True, slots=True)
class TorchCallable:
    """`module:function`: a dotted module name (found on the search path) or a .py file, and a name in it."""

    module: str  # dotted name, or the .py path as typed
    function: str
    file: Path  # the module's file (its __init__.py for a package), hashed into the manifest

    @property
    def is_file(self) -> bool:
        return self.module.endswith(".py")

    @property
    def stem(self) -> str:
        """The module's own name: `models` for mypkg.models, `net` for path/to/net.py."""
        return Path(self.module).stem if self.is_file else self.module.rsplit(".", 1)[-1]

    def describe(self) -> str:
        return f"{Path(self.module).name if self.is_file else self.module}:{self.function}"


def torch_zip_kind(path: Path) -> ZipKind | None:
    """What a zip file holds: TorchScript, a torch.save archive, or neither (None, also for non-zips)."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError):
        return None
    if any(_TORCHSCRIPT_ENTRY.match(name) for name in names):
        return "torchscript"
    if any(_TORCH_SAVE_ENTRY.match(name) for name in names):
        return "torch.save"
    return None


def refuse_non_torchscript(path: Path) -> InvalidInput:
    """The error for a .pt/.pth/.ts file that is not TorchScript (a torch.save pickle, usually)."""
    return InvalidInput(
        f"{path.name} is not a TorchScript file (a plain torch.save pickle, or another format): "
        "unpickling it runs code and it holds no graph to export; save the model with "
        f"torch.jit.save(torch.jit.script(model), '{path.stem}.pt') (or torch.jit.trace(model, example)) "
        "and build that, or build from its code as module:function (e.g. mypkg.models:make_model) "
        "with --samples and --trust-code"
    )


def parse_callable(text: str) -> TorchCallable | None:
    """`pkg.mod:function` or `path/to/file.py:function` → TorchCallable; None when the text is neither.

    NotFound when the shape is right but the module is nowhere on the search path.
    """
    match = _CALLABLE.match(text)
    if match is None:
        return None
    module, function = match["module"], match["function"]
    if module.endswith(".py"):
        file = Path(module).expanduser()
        if not file.is_file():
            raise NotFound(f"module file {file} (of source {text}) does not exist")
        return TorchCallable(module, function, file.resolve())
    if not _DOTTED.match(module):
        return None
    found = find_module_file(module)
    if found is None:
        raise NotFound(
            f"module {module} (of source {text}) is not on the search path (the current folder, then "
            "sys.path); give an installed module, run from the folder above the package, or give "
            "path/to/file.py:function"
        )
    return TorchCallable(module, function, found)


def find_module_file(module: str) -> Path | None:
    """The file `import module` would load, found without importing anything (None if not found).

    Uses the path-based finder part by part, so a parent package's __init__ does not run; modules
    only reachable through custom import hooks are not found.
    """
    locations: list[str] = [str(Path.cwd()), *sys.path]
    parts = module.split(".")
    origin: str | None = None
    for index in range(len(parts)):
        spec = PathFinder.find_spec(".".join(parts[: index + 1]), locations)
        if spec is None:
            return None
        origin = spec.origin
        if index < len(parts) - 1:
            if spec.submodule_search_locations is None:
                return None
            locations = list(spec.submodule_search_locations)
    if origin is None or not Path(origin).is_file():  # a namespace package has no file of its own
        return None
    return Path(origin).resolve()
