"""``trio-gotask new``: write a sidecar module that builds against the Go library this package
carries, so that a first sidecar needs no clone of the repository."""

from __future__ import annotations

import argparse
import json
import re
import shlex
from pathlib import Path
from typing import Any, Final

from .._golib import LIBRARY_MODULE, LibraryMissing, find_library, module_files
from ._common import EXIT_FAILED, EXIT_OK, Exit, UsageError, add_command

_MAIN: Final = """\
// Command {name} is a trio-gotask sidecar. Python calls its methods:
//
//	async with open_gotask({folder}) as gt:
//	    print(await gt.call("App.Hello", "world"))
//
// open_gotask builds it (and rebuilds it after an edit); so does
// trio-gotask call {shell} App.Hello '"world"'.
package main

import (
	"context"
	"fmt"
	"os"

	"github.com/trio-gotask/trio-gotask/go/gotask"
)

// App is a service. Each exported method shaped like Hello below is called
// from Python as "App.<Method>"; its argument and reply go as msgpack.
type App struct{{}}

// Hello greets name. ctx is cancelled when the Python caller gives up.
func (a *App) Hello(ctx context.Context, name string, reply *map[string]any) error {{
	*reply = map[string]any{{"hello": name}}
	return nil
}}

func main() {{
	if err := gotask.Register(new(App)); err != nil {{
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}}
	// Nothing may be printed to stdout before Run: it carries the handshake.
	gotask.Run()
}}
"""


def add_new(commands: Any, common: argparse.ArgumentParser) -> None:
    parser = add_command(
        commands,
        "new",
        common,
        "write a new sidecar module",
        "Write a Go sidecar module in DIR: go.mod (wired to the Go library this package carries, "
        "through a replace line), go.sum and main.go with one service. go build, go vet and "
        "gopls work in it, and open_gotask(DIR) builds and starts it.",
        """\
The Go library comes from --go-library, else $GOTASK_GO_LIBRARY, else the copy this package
carries. The replace line names that folder: after reinstalling trio-gotask elsewhere, point it
at the new place with the command that 'trio-gotask new' prints for an existing module.

exit status:
  0    written
  1    DIR holds files already, or the Go library is missing
  2    the command line is wrong""",
    )
    parser.add_argument("dir", metavar="DIR", help="the folder to write (created; must be empty)")
    parser.add_argument(
        "--module",
        metavar="PATH",
        help="the module path in go.mod (default: the folder's name, e.g. example.com/you/NAME)",
    )
    parser.add_argument("--go-library", metavar="DIR", help="the Go library to use (a clone's go folder)")
    parser.set_defaults(run=_run_new)


def _run_new(options: argparse.Namespace) -> int:
    folder = Path(options.dir)
    module = options.module or module_name(folder)
    if not _MODULE_PATH.fullmatch(module):
        raise UsageError(f"{module!r} is not a Go module path: use letters, digits and - . _ ~ /")
    try:
        library = find_library(options.go_library)
    except LibraryMissing as exc:
        raise Exit(EXIT_FAILED, f"{exc}: {exc.fix}") from None
    if (folder / "go.mod").exists():
        raise Exit(
            EXIT_FAILED,
            f"{folder} holds a Go module already; to build it against this Go library, run in it:\n"
            f"    go mod edit -require={LIBRARY_MODULE}@v0.0.0 -replace={LIBRARY_MODULE}={library}\n"
            "    go mod tidy",
        )
    if folder.exists() and any(folder.iterdir()):
        raise Exit(EXIT_FAILED, f"{folder} is not empty: name a new folder, or an empty one")
    files = {
        **module_files(library, module),
        "main.go": _MAIN.format(name=module, folder=json.dumps(str(folder)), shell=shlex.quote(str(folder))),
    }
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name).write_text(text)
    if not options.quiet:
        print(
            f"wrote {folder}: go.mod, go.sum, main.go (module {module}, Go library {library})\n\n"
            "call it from Python:\n\n"
            f"    async with open_gotask({json.dumps(str(folder))}) as gt:\n"
            '        print(await gt.call("App.Hello", "world"))\n\n'
            f"or from the shell: trio-gotask call {shlex.quote(str(folder))} App.Hello '\"world\"'"
        )
    return EXIT_OK


_MODULE_PATH: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._~/-]*")


def module_name(folder: Path) -> str:
    """A module path for a sidecar in ``folder``: its name, with what a path may not hold as ``-``
    and what may not start or end one left out."""
    name = re.sub(r"[^A-Za-z0-9._~-]+", "-", folder.resolve().name)
    return re.sub(r"^[^A-Za-z0-9]+|[^A-Za-z0-9]+$", "", name) or "sidecar"
