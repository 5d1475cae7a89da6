"""Package faces are the only door: what a package offers is its `__all__`, and nothing outside reaches past it.

- A package with a face (an `__init__` with `__all__`: the log, the cluster,
  the read side, sessions, the codecs, actors, lanes, the node) is imported
  by the rest of the source only through that face, never by its
  implementation modules. Tests may open a package up: they test its parts.
- A face's `__all__` names exactly what its `__init__` offers: nothing missing
  that it binds, nothing listed that it lacks.
- A folder of modules without a face (`engine.core`, `engine.infra`,
  `engine.ingress`, `engine.cli`) offers each module's `__all__`, and every
  module of the source declares one.
"""

from __future__ import annotations

import ast
import importlib
import types
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FACES = [
    "engine.wal",
    "engine.cluster",
    "engine.projections",
    "engine.routes",
    "engine.search",
    "engine.alerts",
    "engine.backup",
    "engine.retention",
    "engine.deploy",
    "engine.web",
    "engine.auth",
    "engine.core.hl7",
    "engine.core.fhir",
    "engine.node",
    "actors",
    "lanes",
]
SOURCE = ("engine", "actors", "lanes", "benchmarks")


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _files(*folders: str) -> list[Path]:
    return sorted(p for folder in folders for p in (ROOT / folder).rglob("*.py"))


def _inside(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def test_the_source_goes_through_package_faces() -> None:
    """An import of `engine.wal.log` from outside `engine.wal` fails here: `from engine.wal import ...` instead."""
    bypasses = []
    for path in _files(*SOURCE):
        me = _module_name(path)
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.ImportFrom) and node.module and node.level == 0):
                continue
            faces = [f for f in FACES if node.module.startswith(f + ".") and not _inside(me, f)]
            bypasses += [f"{path.relative_to(ROOT)}:{node.lineno} imports {node.module}" for _ in faces]
    assert not bypasses, "\n".join(bypasses)


@pytest.mark.parametrize("name", FACES)
def test_a_face_lists_exactly_what_it_offers(name: str) -> None:
    """`__all__` names what the face binds (its own public names), and each of them exists."""
    module = importlib.import_module(name)
    offered = set(module.__all__)
    missing = sorted(n for n in offered if not hasattr(module, n))
    assert not missing, f"{name}.__all__ lists names it lacks: {missing}"
    bound = {
        n
        for n, value in vars(module).items()
        if not n.startswith("_")
        and not isinstance(value, types.ModuleType)  # its own submodules, bound by being imported
        and n not in {"TYPE_CHECKING", "Any", "annotations"}
    }
    unlisted = sorted(bound - offered)
    assert not unlisted, f"{name} binds names its __all__ leaves out: {unlisted}"


MODULES = [
    _module_name(p)
    for p in _files("engine", "actors", "lanes")
    if p.name not in {"__init__.py", "__main__.py"} and not any(_inside(_module_name(p), f) for f in FACES)
]


@pytest.mark.parametrize("name", MODULES)
def test_a_module_of_a_folder_declares_what_it_offers(name: str) -> None:
    """Each module outside a face declares `__all__`, and every name in it exists."""
    module = importlib.import_module(name)
    assert hasattr(module, "__all__"), f"{name} has no __all__"
    missing = [n for n in module.__all__ if not hasattr(module, n)]
    assert not missing, f"{name}.__all__ lists names it lacks: {missing}"


def test_the_check_sees_the_source() -> None:
    """Guard against a vacuous pass: faces and modules are found."""
    assert len(_files(*SOURCE)) > 100
    assert len(MODULES) > 30
