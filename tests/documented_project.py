"""The example project of docs/testing.md, written out of the page itself, so that what the page
shows is what runs (the `plugin` session of noxfile.py runs it against an installed wheel).

A file of the project is a fenced block of the page whose first line is a comment naming its path
(``# tests/conftest.py``, ``// sidecar/main.go``); other blocks are illustrations. The sidecar's
go.mod is written as tests/gomodule.py writes a user's: the library from this clone, through a
local ``replace``.
"""

from __future__ import annotations

import re
from pathlib import Path

from gomodule import ROOT, write, write_module

DOC = ROOT / "docs" / "testing.md"
SIDECAR = "sidecar"

_FILE_BLOCK = re.compile(r"^```[a-z]+\n((?:#|//) ([\w./-]+)\n.*?)^```$", re.MULTILINE | re.DOTALL)


def files(page: str | None = None) -> dict[str, str]:
    """The project's files on the page (docs/testing.md by default): path -> text."""
    found: dict[str, str] = {}
    for match in _FILE_BLOCK.finditer(DOC.read_text() if page is None else page):
        text, path = match[1], match[2]
        if path in found:
            raise ValueError(f"{DOC.name} shows {path} twice")
        found[path] = text
    return found


def write_project(folder: Path) -> dict[str, str]:
    """Write the project into ``folder`` and return its files as `files` does."""
    found = files()
    sidecar = {
        name.removeprefix(f"{SIDECAR}/"): text
        for name, text in found.items()
        if name.startswith(f"{SIDECAR}/")
    }
    write_module(folder / SIDECAR, sidecar)
    for name, text in found.items():
        if not name.startswith(f"{SIDECAR}/"):
            write(folder / name, text)
    return found
