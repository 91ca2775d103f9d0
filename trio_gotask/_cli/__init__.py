"""The command line, ``trio-gotask`` or ``python -m trio_gotask`` (docs/cli.md).

``new`` writes a sidecar module, ``call`` calls one method of a sidecar and prints the result as
JSON, ``doctor`` checks that this machine can build and run sidecars, ``bench`` measures calls on
each transport, ``stubs`` writes typed Python classes for a sidecar's services. Exit status: 0
done, 1 the call or a check failed, 2 the command line is wrong, 3 the sidecar could not be
started or reached (or stopped serving), 130 interrupted.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from .. import __version__
from ._common import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_USAGE, TOP_EXIT_STATUS_HELP, Exit, UsageError
from .bench import add_bench
from .call import add_call
from .doctor import add_doctor
from .new import add_new
from .stubs import add_stubs


def main(argv: Sequence[str] | None = None, *, prog: str = "trio-gotask") -> int:
    """Run the command line ``argv`` (default ``sys.argv[1:]``) and return its exit status."""
    parser = _parser(prog)
    options = parser.parse_args(argv)
    command: argparse.ArgumentParser = options.command_parser
    try:
        status: int = options.run(options)
    except UsageError as exc:
        print(f"{command.prog}: error: {exc}\n(run '{command.prog} --help' for help)", file=sys.stderr)
        status = EXIT_USAGE
    except Exit as exc:
        print(f"{command.prog}: {exc}", file=sys.stderr)
        status = exc.status
    except KeyboardInterrupt:
        print(f"{command.prog}: interrupted", file=sys.stderr)
        status = EXIT_INTERRUPTED
    except BrokenPipeError:  # the reader of stdout went away (`| head`): not worth a traceback
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        status = EXIT_FAILED
    return status


def _parser(prog: str) -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=0,
        help="say more: -v shows the library's info messages, -vv its debug messages",
    )
    common.add_argument(
        "-q",
        "--quiet",
        action="count",
        default=0,
        help="say less: no build messages, no progress, only errors",
    )
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Write Go sidecars, call them from the shell, check a machine, measure calls, write typed classes.",
        epilog=f"Run '{prog} COMMAND --help' for a command's options. Documentation: docs/cli.md.\n\n"
        + TOP_EXIT_STATUS_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)
    add_new(commands, common)
    add_call(commands, common)
    add_doctor(commands, common)
    add_bench(commands, common)
    add_stubs(commands, common)
    return parser
