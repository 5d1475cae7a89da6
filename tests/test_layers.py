"""The layers of DESIGN.md, checked on the source: imports point downward only.

- The pure floor imports no I/O, clock or network module, and nothing of the
  node floor; the runtime floor (actors on anyio) may run an event loop but
  does no I/O.
- `lanes/` and `actors/` import only the pure floor of `engine`.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# The pure floor of `engine` is one package: what `lanes/` and `actors/` may import.
PURE_ENGINE = "engine.core"
# The runtime floor: on anyio, but no I/O of its own (the node passes it in).
RUNTIME = {
    "actors.actor",
    "actors.clock",
    "actors.supervisor",
    "actors.patients",
    "actors.turns",
    "lanes.scheduler",
    "lanes.pacing",
}
# I/O of any kind: never below the node floor.
IO = {
    "os",
    "io",
    "pathlib",
    "socket",
    "subprocess",
    "shutil",
    "tempfile",
    "sys",
    "threading",
    "select",
    "nats",
    "asyncpg",
}
# The pure floor reads no clock and runs no event loop either.
IMPURE = IO | {"time", "asyncio", "trio", "anyio"}


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def _is_pure(module: str) -> bool:
    return module in {"engine", PURE_ENGINE} or module.startswith(PURE_ENGINE + ".")


def _sources(*packages: str) -> list[Path]:
    return sorted(p for pkg in packages for p in (ROOT / pkg).rglob("*.py"))


LOWER_FILES = [
    p
    for p in _sources("engine", "lanes", "actors")
    if _is_pure(_module_name(p)) or _module_name(p).startswith(("lanes", "actors"))
]
PURE_FILES = [p for p in LOWER_FILES if _module_name(p) not in RUNTIME]
RUNTIME_FILES = [p for p in LOWER_FILES if _module_name(p) in RUNTIME]


@pytest.mark.parametrize("path", PURE_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_pure_floor_does_no_io(path: Path) -> None:
    """Pure modules import no I/O, clock or network module."""
    bad = {name for name in _imports(path) if name.split(".")[0] in IMPURE}
    assert not bad, f"{path.name} imports {sorted(bad)}"


@pytest.mark.parametrize("path", RUNTIME_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_runtime_floor_does_no_io(path: Path) -> None:
    """The runtime floor runs on anyio but does no I/O itself."""
    bad = {name for name in _imports(path) if name.split(".")[0] in IO}
    assert not bad, f"{path.name} imports {sorted(bad)}"


@pytest.mark.parametrize("path", LOWER_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_point_downward(path: Path) -> None:
    """Pure modules, lanes and actors import only the pure floor of engine."""
    engine_imports = {n for n in _imports(path) if n.split(".")[0] == "engine"}
    bad = {n for n in engine_imports if not _is_pure(n)}
    assert not bad, f"{path.name} imports the node floor: {sorted(bad)}"


def test_the_pure_floor_does_not_import_lanes_except_decode() -> None:
    """Codecs never depend on lanes; only the pipeline (decode) joins them."""
    for path in _sources("engine"):
        name = _module_name(path)
        if _is_pure(name) and name != "engine.core.decode":
            assert not {n for n in _imports(path) if n.startswith("lanes")}, name


def test_the_check_sees_the_files() -> None:
    """Guard against a vacuous pass: the lists above are not empty."""
    assert len(PURE_FILES) > 15
    assert len(RUNTIME_FILES) == len(RUNTIME)
