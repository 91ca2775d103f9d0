"""Each module of the package imports only from the layers below it (docs/architecture.md)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.fast  # no process: nox -s fast

PACKAGE = Path(__file__).parent.parent / "trio_gotask"
# Bottom first; a module may import any module listed before it.
LAYERS = [
    "_errors",
    "_wire",
    "_protocol",
    "_goridge",
    "_address",
    "_settings",
    "_statistics",
    "_channel",
    "_opening",
    "_goridge_opening",
    "_intercept",
    "_handlers",
    "_stream",
    "_connection",
    "_pool",
    "_names",
    "_rotation",
    "_endpoints",
    "_sidecar",
    "_dialect",
    "_supervisor",
    "_build",
    "_golib",
    "_tracing",
    "_client",
    "stubs",  # what the modules `trio-gotask stubs` writes import: public, for generated code
    "_stubs",
    "pytest_plugin",
    "__init__",
    "_cli",  # the command line (a package, a module per command): a user of the package, like any program
    "__main__",
]


def sources(module: str) -> list[Path]:
    """A module's file, or a package's files."""
    folder = PACKAGE / module
    return sorted(folder.glob("*.py")) if folder.is_dir() else [PACKAGE / f"{module}.py"]


def imported(module: str) -> set[str]:
    """The package's modules that ``module`` imports (a package's own modules among themselves
    aside)."""
    names = set()
    for source in sources(module):
        level = 1 if source.parent == PACKAGE else 2  # how a relative import reaches the package
        for node in ast.walk(ast.parse(source.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == level and node.module:
                names.add(node.module.split(".")[0])
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("trio_gotask."):
                names.add(node.module.split(".")[1])  # type: ignore[union-attr]
    return names


def test_every_module_has_a_layer() -> None:
    packages = [p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()]
    assert sorted([*(p.stem for p in PACKAGE.glob("*.py")), *packages]) == sorted(LAYERS)


def test_modules_import_only_from_layers_below() -> None:
    for depth, module in enumerate(LAYERS):
        above = set(LAYERS[depth:])
        assert not imported(module) & above, f"{module} imports from its own layer or above"


def test_the_protocol_knows_no_io() -> None:
    for module in ("_wire", "_goridge", "_protocol", "_rotation"):
        tree = ast.parse((PACKAGE / f"{module}.py").read_text())
        roots = {
            alias.name.split(".")[0]
            for node in ast.walk(tree)
            if isinstance(node, ast.Import)
            for alias in node.names
        } | {
            (node.module or "").split(".")[0]
            for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and node.level == 0
        }
        assert not roots & {"trio", "socket", "os", "select", "asyncio", "outcome"}, module
