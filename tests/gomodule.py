"""Go modules written by the tests, shaped like a user's: their own module, using this repository's
library through a local `replace`, with a copy of its go.sum."""

from __future__ import annotations

import re
import shutil
from collections.abc import Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LIBRARY = ROOT / "go"


def library_requirements() -> list[str]:
    """The library's own requirements, which a module using it must list too (as indirect)."""
    found = []
    for line in (LIBRARY / "go.mod").read_text().splitlines():
        if match := re.fullmatch(r"(?:require\s+)?\s*(\S+) (v\S+)(?:\s*//.*)?", line.strip()):
            found.append(f"{match[1]} {match[2]} // indirect")
    return found


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def write_module(folder: Path, files: Mapping[str, str], *, requires: str = "", replaces: str = "") -> Path:
    """A module ``example.com/<folder name>`` in ``folder`` holding ``files`` (name: text) and a
    go.mod that uses the library in this repository."""
    require_lines = [
        "github.com/trio-gotask/trio-gotask/go v0.0.0",
        *library_requirements(),
        *requires.splitlines(),
    ]
    write(
        folder / "go.mod",
        f"module example.com/{folder.name}\n\ngo 1.22\n\nrequire (\n"
        + "".join(f"\t{line}\n" for line in require_lines if line)
        + f")\n\nreplace github.com/trio-gotask/trio-gotask/go => {LIBRARY}\n{replaces}",
    )
    shutil.copy(LIBRARY / "go.sum", folder / "go.sum")
    for name, text in files.items():
        write(folder / name, text)
    return folder
