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
    folder, or the clone itself), else ``$GOTASK_GO_LIBRARY``, else the copy a wheel carries
    (``trio_gotask/go``), else the ``go`` folder beside this package in a source checkout or an
    editable install. Raises `LibraryMissing`, which says what to do, when none holds it."""
    named = explicit or os.environ.get(LIBRARY_ENV)
    if named:
        folder = Path(named).expanduser().resolve()
        for candidate in (folder, folder / "go"):
            if _library_module(candidate) == LIBRARY_MODULE:
                return candidate
        source = "--go-library" if explicit else LIBRARY_ENV
        raise LibraryMissing(
            f"{source} names {str(folder)!r}, which holds no go.mod of the module {LIBRARY_MODULE}",
            f"point {source} at the go folder of a clone of {CLONE_URL}, or unset it to use the "
            "library this package carries",
        )
    package = Path(__file__).resolve().parent
    for candidate in (package / "go", package.parent / "go"):
        if _library_module(candidate) == LIBRARY_MODULE:
            return candidate
    raise LibraryMissing(
        f"the Go library ({LIBRARY_MODULE}) is neither in this installed package nor beside it",
        f"reinstall trio-gotask from a wheel (it carries the library), or clone {CLONE_URL} and "
        f"pass its go folder: --go-library trio-gotask/go (or set {LIBRARY_ENV})",
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


def module_files(library: Path, module: str) -> dict[str, str]:
    """The go.mod and go.sum of a sidecar module named ``module`` that uses the Go library in
    ``library`` through a replace line: the library's own requirements are listed (indirect) and
    its go.sum copied, so that the module builds, vets and loads in gopls as it is."""
    version, requires = go_mod_requirements((library / "go.mod").read_text())
    lines = [f"\t{LIBRARY_MODULE} v0.0.0"] + [f"\t{name} {v} // indirect" for name, v in requires]
    go_mod = (
        f"module {module}\n\ngo {version or '.'.join(map(str, MIN_GO))}\n\n"
        + "require (\n"
        + "\n".join(lines)
        + f"\n)\n\nreplace {LIBRARY_MODULE} => {_go_mod_path(library)}\n"
    )
    try:
        go_sum = (library / "go.sum").read_text()
    except FileNotFoundError:
        go_sum = ""
    return {"go.mod": go_mod, "go.sum": go_sum}


def probe_module(library: Path) -> dict[str, str]:
    """The files of the probe sidecar's module, which uses ``library`` through a replace line."""
    return {"main.go": _PROBE_MAIN, **module_files(library, PROBE_NAME)}


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
