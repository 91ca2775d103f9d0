"""Where the Go library is, and the probe sidecar built from it (``doctor`` and ``bench`` build it):
finding the library, reading its go.mod, writing the probe module."""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path
from typing import Final

import trio

from ._build import build_sidecar, cache_dir

MIN_GO: Final = (1, 22)
"""The oldest Go that builds the Go library (the ``go`` line of go/go.mod; a test keeps them equal)."""


LIBRARY_MODULE: Final = "github.com/trio-gotask/trio-gotask/go"


LIBRARY_ENV: Final = "GOTASK_GO_LIBRARY"


CLONE_URL: Final = "https://github.com/trio-gotask/trio-gotask"


PROBE_NAME: Final = "trio-gotask-probe"
"""The sidecar ``doctor`` and ``bench`` build: its folder under the cache, and its binary's name."""


_PROBE_MAIN: Final = """\
// Command trio-gotask-probe is the sidecar that trio-gotask doctor and bench build
// and call. It is written by trio-gotask; edits are overwritten.
package main

import (
	"fmt"
	"os"

	"github.com/trio-gotask/trio-gotask/go/gotask"
)

// App is the service doctor and bench call.
type App struct{}

// Echo returns its argument unchanged.
func (a *App) Echo(v any, r *any) error {
	*r = v
	return nil
}

func main() {
	if err := gotask.Register(new(App)); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	gotask.Run()
}
"""


class LibraryMissing(Exception):
    """The Go library is not where we looked; ``fix`` says what to do."""

    def __init__(self, message: str, fix: str) -> None:
        super().__init__(message)
        self.fix = fix


def find_library(explicit: str | None) -> Path:
    """The folder of the Go library (the module `LIBRARY_MODULE`): ``explicit`` (a clone's ``go``
    folder, or the clone itself), else ``$GOTASK_GO_LIBRARY``, else the ``go`` folder beside this
    package in a source checkout. A wheel carries the Python side only: raises `LibraryMissing`."""
    named = explicit or os.environ.get(LIBRARY_ENV)
    if named:
        folder = Path(named).expanduser().resolve()
        for candidate in (folder, folder / "go"):
            if _library_module(candidate) == LIBRARY_MODULE:
                return candidate
        source = "--go-library" if explicit else LIBRARY_ENV
        raise LibraryMissing(
            f"{source} names {str(folder)!r}, which holds no go.mod of the module {LIBRARY_MODULE}",
            f"point {source} at the go folder of a clone of {CLONE_URL}",
        )
    beside = Path(__file__).resolve().parent.parent / "go"
    if _library_module(beside) == LIBRARY_MODULE:
        return beside
    raise LibraryMissing(
        f"the Go library ({LIBRARY_MODULE}) is not beside this installed package: "
        "a wheel carries the Python side only",
        f"clone {CLONE_URL} and pass its go folder: --go-library trio-gotask/go (or set {LIBRARY_ENV}); "
        "your own sidecars need it too, through a replace line in their go.mod",
    )


def _library_module(folder: Path) -> str | None:
    try:
        text = (folder / "go.mod").read_text()
    except (OSError, UnicodeDecodeError):
        return None
    match = re.search(r"^module\s+(\S+)", text, re.MULTILINE)
    return match[1] if match else None


def go_mod_requirements(text: str) -> tuple[str, list[tuple[str, str]]]:
    """The ``go`` version and the ``require`` lines (module, version) of a go.mod."""
    version = ""
    requires: list[tuple[str, str]] = []
    block = ""
    for raw in text.splitlines():
        line = raw.split("//", 1)[0].strip()
        if not line:
            continue
        if block:
            if line == ")":
                block = ""
            elif block == "require" and len(words := line.split()) >= 2:
                requires.append((words[0], words[1]))
            continue
        words = line.split()
        if len(words) == 2 and words[1] == "(":
            block = words[0]
        elif words[0] == "go" and len(words) == 2:
            version = words[1]
        elif words[0] == "require" and len(words) >= 3:
            requires.append((words[1], words[2]))
    return version, requires


def probe_module(library: Path) -> dict[str, str]:
    """The files of the probe sidecar's module, which uses ``library`` through a replace line."""
    version, requires = go_mod_requirements((library / "go.mod").read_text())
    lines = [f"\t{LIBRARY_MODULE} v0.0.0"] + [f"\t{module} {v} // indirect" for module, v in requires]
    go_mod = (
        f"module {PROBE_NAME}\n\ngo {version or '.'.join(map(str, MIN_GO))}\n\n"
        + "require (\n"
        + "\n".join(lines)
        + f"\n)\n\nreplace {LIBRARY_MODULE} => {_go_mod_path(library)}\n"
    )
    try:
        go_sum = (library / "go.sum").read_text()
    except FileNotFoundError:
        go_sum = ""
    return {"main.go": _PROBE_MAIN, "go.mod": go_mod, "go.sum": go_sum}


def _go_mod_path(path: Path) -> str:
    text = str(path)
    return json.dumps(text) if any(c.isspace() or c in '"`' for c in text) else text  # a quoted Go string


def _write_probe(library: Path) -> Path:
    folder = cache_dir() / "sources" / PROBE_NAME
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in probe_module(library).items():
        path = folder / name
        try:
            unchanged = path.read_text() == text
        except (OSError, UnicodeDecodeError):
            unchanged = False
        if not unchanged:  # an unchanged file keeps its stat, and the build cache its fast path
            fd, partial_file = tempfile.mkstemp(prefix=f".{name}.", dir=folder)
            with os.fdopen(fd, "w") as file:
                file.write(text)
            os.replace(partial_file, path)  # whole: doctors running at once write the same text
    return folder


async def build_probe(library: Path) -> Path:
    """Build (or find in the cache) the probe sidecar, using the Go library in ``library``."""
    folder = await trio.to_thread.run_sync(_write_probe, library)
    return await build_sidecar(folder)
