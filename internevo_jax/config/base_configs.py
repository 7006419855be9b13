"""Run a config file the way InternEvo does, ``_base_`` imports included, without InternEvo installed.

InternEvo's configs start with

    from internlm.utils.utils import read_base
    with read_base():
        from configs._base_.models.internlm2_7B import *

``read_base`` only marks the imports; Python's import system does the rest, with InternEvo's repo root
as the current directory. Here ``internlm.utils.utils`` is served by a stand-in while the file runs
(unless a real ``internlm`` imports), and the first component of such an import (``configs``) is found
as a folder of the config's own tree. Everything imported that way is forgotten afterwards, so the next
config, from another tree, gets its own bases.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import runpy
import sys
import traceback
from collections.abc import Iterable, Iterator
from importlib.abc import Loader, MetaPathFinder
from importlib.machinery import ModuleSpec
from importlib.util import spec_from_file_location
from pathlib import Path
from types import ModuleType
from typing import Any

from .errors import ConfigError

_STUB_MODULES = ("internlm", "internlm.utils", "internlm.utils.utils")


@contextlib.contextmanager
def read_base() -> Iterator[None]:
    """InternEvo's marker around base-config imports; it does nothing, as InternEvo's does not."""
    yield


def run_config_file(file: Path) -> dict[str, Any]:
    """Execute ``file`` as a module and return its namespace (raises ConfigError for a missing import)."""
    try:
        return _run(file, stub_internlm=False)
    except _BrokenInternlm:
        # An InternEvo checkout on sys.path without its dependencies (torch, ...): read_base is all
        # a config needs from it, so run again with the stand-in.
        return _run(file, stub_internlm=True)


class _BrokenInternlm(Exception):
    """A real ``internlm`` package was found but could not be imported."""


def _run(file: Path, stub_internlm: bool) -> dict[str, Any]:
    imports = _ConfigImports(file.resolve().parent, Path.cwd(), stub_internlm)
    with imports.installed():
        try:
            return runpy.run_path(str(file), run_name="__internevo_config__")
        except Exception as exc:
            if imports.broke_internlm(exc):
                raise _BrokenInternlm from exc
            if isinstance(exc, ModuleNotFoundError):
                raise imports.missing_module_error(file, exc) from exc
            raise


def _unique(paths: Iterable[Path]) -> list[Path]:
    return list(dict.fromkeys(paths))


def _under(path: str | None, roots: Iterable[Path]) -> bool:
    if not path:
        return False
    return any(path == str(root) or path.startswith(str(root) + os.sep) for root in roots)


class _ConfigImports(MetaPathFinder, Loader):
    """Meta-path finder, first on sys.meta_path while a config runs.

    It serves the ``internlm.utils.utils`` stand-in when no real ``internlm`` is found, and a
    top-level name that is a folder of the config's tree (``configs``) when no real module of that
    name is found. Bare folders become namespace packages, as InternEvo's ``configs`` folders have no
    ``__init__.py``.
    """

    def __init__(self, folder: Path, cwd: Path, stub_internlm: bool):
        self.folder = folder
        self.cwd = cwd
        self.stub_internlm = stub_internlm
        self.claimed: dict[str, Path] = {}  # top-level name -> the folder it was found as
        self.real_internlm: list[Path] = []  # where a real internlm was found, if one was
        self.internlm_failed = False  # that real internlm raised while importing

    # --- finding -------------------------------------------------------------------------------

    def candidates(self, name: str) -> list[Path]:
        """Where a top-level ``name`` may live, best first: the config's folder or its nearest parent of
        that name (``configs`` for configs/demo.py), then a subfolder ``name`` of the config's folder,
        then one of the current directory."""
        named = [p for p in (self.folder, *self.folder.parents) if p.name == name][:1]
        return _unique([*named, self.folder / name, self.cwd / name])

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> ModuleSpec | None:
        if name in _STUB_MODULES:
            return self._stub_spec(name)
        if path is not None or not name.isidentifier():
            return None
        # Only the best folder, never a mix: a base missing from it must not come from elsewhere.
        folder = next((p for p in self.candidates(name) if p.is_dir()), None)
        if folder is None:
            return None
        elsewhere = self._spec_elsewhere(name)
        if elsewhere is not None and elsewhere.origin is not None:
            return None  # a real module or package of that name wins over a folder of the tree
        self.claimed[name] = folder
        init = folder / "__init__.py"
        if init.is_file():
            return spec_from_file_location(name, init, submodule_search_locations=[str(folder)])
        spec = ModuleSpec(name, None, is_package=True)  # no loader: Python makes it a namespace package
        spec.submodule_search_locations = [str(folder)]
        return spec

    def _stub_spec(self, name: str) -> ModuleSpec | None:
        """The stand-in's spec, or None to let a real internlm be imported."""
        if name != "internlm":  # a submodule: the stand-in's only under the stand-in's internlm
            if not self._is_stub(sys.modules.get(name.rpartition(".")[0])):
                return None
            return ModuleSpec(name, self, is_package=name != _STUB_MODULES[-1])
        if not self.stub_internlm:
            real = self._spec_elsewhere(name)
            if real is not None:
                self.real_internlm = [Path(p) for p in real.submodule_search_locations or [real.origin or ""]]
                return None
        return ModuleSpec(name, self, is_package=True)

    def _spec_elsewhere(self, name: str) -> ModuleSpec | None:
        """The spec the rest of sys.meta_path gives ``name`` (what Python would import without us)."""
        for finder in sys.meta_path:
            find = getattr(finder, "find_spec", None)
            if finder is self or find is None:
                continue
            spec = find(name, None)
            if spec is not None:
                return spec
        return None

    def _is_stub(self, module: ModuleType | None) -> bool:
        return module is not None and getattr(module, "__loader__", None) is self

    # --- loading the stand-in -------------------------------------------------------------------

    def create_module(self, spec: ModuleSpec) -> None:
        return None  # the default module object

    def exec_module(self, module: ModuleType) -> None:
        if module.__name__ == _STUB_MODULES[-1]:
            module.read_base = read_base  # type: ignore[attr-defined]

    # --- around one run --------------------------------------------------------------------------

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        """Put the config's folder on sys.path and this finder on sys.meta_path; afterwards remove
        both and forget every module imported from the config's tree and the stand-in."""
        modules_before = set(sys.modules)
        folder = str(self.folder)
        importlib.invalidate_caches()  # config files may have been written since the last import
        sys.path.insert(0, folder)  # `import my_sizes` finds my_sizes.py next to the config
        sys.meta_path.insert(0, self)
        try:
            yield
        finally:
            sys.meta_path.remove(self)
            sys.path.remove(folder)
            for name in set(sys.modules) - modules_before:
                if self._owns(name, sys.modules[name]):
                    del sys.modules[name]

    def _owns(self, name: str, module: ModuleType) -> bool:
        """Whether a module imported during the run came from the config's tree or is the stand-in."""
        top = name.partition(".")[0]
        if self._is_stub(module) or top in self.claimed:
            return True
        if top == "internlm" and self.internlm_failed:
            return True  # what the real internlm left behind before it failed
        roots = [self.folder, *self.claimed.values()]
        paths = [getattr(module, "__file__", None), *(getattr(module, "__path__", None) or [])]
        return any(_under(p, roots) for p in paths)

    def broke_internlm(self, exc: BaseException) -> bool:
        """Whether ``exc`` comes from importing a real internlm that was found but does not import."""
        if self.stub_internlm or not self.real_internlm:
            return False
        frames = traceback.extract_tb(exc.__traceback__)
        self.internlm_failed = (
            isinstance(exc, ImportError) and (exc.name or "").partition(".")[0] == "internlm"
        ) or any(_under(frame.filename, self.real_internlm) for frame in frames)
        return self.internlm_failed

    # --- reporting ---------------------------------------------------------------------------------

    def missing_module_error(self, file: Path, exc: ModuleNotFoundError) -> ConfigError:
        """ConfigError naming the config, the failing import line and the places searched."""
        name = exc.name or str(exc)
        top, _, rest = name.partition(".")
        head = f"{file}: {_import_line(exc)} failed: there is no module '{name}'."
        if top in self.claimed:
            wanted = Path(self.claimed[top], *rest.split("."))
            return ConfigError(
                f"{head} Looked for a file {wanted}.py or a folder {wanted}, as '{top}' is the folder "
                f"{self.claimed[top]} (InternEvo's configs/_base_ layout: the config's own folder or its "
                f"nearest parent of that name, else such a folder next to the config or in the current "
                f"directory). Fix the import or add the missing file.",
                source=str(file),
            )
        return ConfigError(
            f"{head} Looked for '{top}' as {self.folder} or a parent folder of that name, as a module "
            f"or folder in {self.folder}, as a folder in the current directory {self.cwd}, and among "
            f"the installed packages. Fix the import, add the file, or install the missing package.",
            source=str(file),
        )


def _import_line(exc: BaseException) -> str:
    """'`from x import *` (path, line N)' for the statement that raised, read from the traceback."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if not f.filename.startswith("<")]
    if not frames:
        return "an import"
    frame = frames[-1]
    statement = (frame.line or "").split("#")[0].strip()  # without the pylint/noqa comments
    return f"`{statement}` ({frame.filename}, line {frame.lineno})"
