"""``trio-gotask stubs``: typed Python classes for a sidecar's Go services (docs/typed-stubs.md)."""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path
from typing import Any

import trio

from .._errors import SidecarError
from .._stubs import (
    DEFAULT_TIMEOUT,
    NO_DESCRIPTION,
    describe_sidecar,
    parse_description,
    render,
    sidecar_binary,
)
from ._common import EXIT_FAILED, EXIT_OK, Exit, UsageError, add_command, seconds_arg, trio_run, write_stdout


def add_stubs(commands: Any, common: argparse.ArgumentParser) -> None:
    parser = add_command(
        commands,
        "stubs",
        common,
        "write a Python module of typed classes for a sidecar's Go services",
        "Run SIDECAR in describe mode and write a Python module with a dataclass for each Go struct\n"
        "its methods use and a class for each service, whose async methods check what Go returns.",
        """\
SIDECAR is a Go main package's folder (built as open_gotask builds it) or a built sidecar,
built with a gotask package that has describe mode (GOTASK_DESCRIBE=1).

examples:
  trio-gotask stubs go/example -o examples/typed/example_api.py
  trio-gotask stubs ./sidecar -o myapp/sidecar_api.py --check    # in CI: fail if out of date

exit status:
  0    written (--check: up to date)
  1    --check: FILE is out of date, or missing
  2    the command line is wrong
  3    the sidecar could not be built, started, or describe itself""",
    )
    parser.add_argument("sidecar", metavar="SIDECAR", help="a Go main package's folder, or a built sidecar")
    parser.add_argument(
        "-o", "--output", metavar="FILE", default="-", help="the module to write ('-', the default: stdout)"
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="write nothing: exit 1, with the command that updates it, if FILE differs from what it would be",
    )
    parser.add_argument(
        "--timeout",
        type=seconds_arg,
        default=DEFAULT_TIMEOUT,
        metavar="SECONDS",
        help=f"how long the sidecar may take to describe itself (default {DEFAULT_TIMEOUT:g})",
    )
    parser.set_defaults(run=_run_stubs)


def _run_stubs(options: argparse.Namespace) -> int:
    if options.check and options.output == "-":
        raise UsageError("--check compares with FILE: pass -o FILE")
    command = shlex.join(["trio-gotask", "stubs", options.sidecar, "-o", options.output])
    regenerate = "" if options.output == "-" else command
    text: str = trio_run(options, _generate, options.sidecar, options.timeout, regenerate)
    if options.output == "-":
        write_stdout(text.encode())
        return EXIT_OK
    path = Path(options.output)
    if options.check:
        try:
            current = path.read_text()
        except OSError as exc:
            raise Exit(EXIT_FAILED, f"{options.output}: {exc.strerror}; generate it: {command}") from None
        if current != text:
            raise Exit(EXIT_FAILED, f"{options.output} is out of date; generate it again: {command}")
        return EXIT_OK
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text)
    os.replace(temporary, path)
    if not options.quiet:
        print(f"wrote {options.output}", file=sys.stderr)
    return EXIT_OK


async def _generate(sidecar: str, seconds: float, command: str) -> str:
    """The module for ``sidecar``; ``seconds`` bounds its run in describe mode, not its build."""
    binary = await sidecar_binary(sidecar)
    with trio.move_on_after(seconds):
        description = parse_description(await describe_sidecar(binary))
        return render(description, source=sidecar, command=command)
    raise SidecarError(NO_DESCRIPTION.format(seconds=seconds))
