"""The sidecar process: start it, read its handshake, drain its output, notice its death, stop it."""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import signal
import stat
import subprocess
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final, final

import trio

from ._address import open_stream
from ._channel import PeerClosed
from ._errors import ErrorFactory, ProtocolError, SidecarError, error_factory
from ._goridge_opening import goridge_probe
from ._wire import (
    HANDSHAKE_MARKER,
    LAUNCH_COOKIE_KEY,
    LAUNCH_COOKIE_VALUE,
    MAX_HANDSHAKE_LINE,
    parse_handshake,
)

logger: Final = logging.getLogger("trio_gotask.sidecar")

_STDERR_TAIL_LINES: Final = 20
# How much a sidecar may print to stdout before its handshake line (skipped, and logged).
_MAX_BEFORE_HANDSHAKE: Final = 64 * 1024
# After the process exits, how long to wait for the rest of its stderr: its end comes at once, unless
# a child of the sidecar holds the pipe open.
_STDERR_SETTLE: Final = 1.0
# Once its stdout or socket closed before the handshake, how long to wait to see it exit: a dying
# process closes them a moment before it can be reaped; a live one costs the whole wait.
_EXIT_NOTICE: Final = 1.0
# Waits between attempts to connect to a GoTask sidecar that is not listening yet.
_FIRST_RETRY: Final = 0.001
_LAST_RETRY: Final = 0.05


Ready = Callable[["Sidecar"], Awaitable["Handshake"]]
"""Waits until a just-started sidecar is ready, and says where it serves."""
Quit = Callable[[trio.Process, float], Awaitable[None]]
"""Asks a running sidecar process to exit, and waits for it up to the grace period given."""


async def close_stdin(process: trio.Process, grace: float) -> None:
    """How a sidecar of this project is asked to exit: its stdin is closed."""
    if process.stdin is not None:
        await trio.aclose_forcefully(process.stdin)
    with trio.move_on_after(grace):
        await process.wait()


async def terminate(process: trio.Process, grace: float) -> None:
    """How a GoTask sidecar is asked to exit: SIGTERM. Its stdin stays open until it is gone: a
    closed pipe would make it log "pipe is closed"."""
    process.terminate()
    with trio.move_on_after(grace):
        await process.wait()


@dataclass(frozen=True)
class Handshake:
    address: str
    rest: bytes
    """Bytes that followed the handshake line on stdout: the first frames, in pipe mode."""


@final
class Sidecar:
    """One run of the sidecar program, in the environment ``env`` (the whole of it).

    `run` starts the process and reports the handshake through ``task_status``; it then waits for
    the process to exit, sets `exited`, and returns. Cancelling it stops the process: ``quit``
    asks it to exit (by default: stdin is closed, the sidecar's signal to shut down) and waits up
    to ``grace`` seconds, then SIGTERM, then SIGKILL; the process is always reaped.

    ``ready`` says when the process is ready and where it serves (by default: `read_handshake`,
    the line a sidecar of this project prints). The wire dialect picks both (`_dialect`): a
    GoTask sidecar prints no handshake and takes SIGTERM, not a closed stdin, as its request.
    """

    def __init__(
        self,
        command: Sequence[str],
        *,
        transport: str,
        env: Mapping[str, str],
        startup_timeout: float,
        grace: float,
        ready: Ready | None = None,
        quit: Quit | None = None,
    ) -> None:
        self.command = list(command)
        self._ready = ready if ready is not None else Sidecar.read_handshake
        self._quit = quit if quit is not None else close_stdin
        self.transport = transport
        self._env = {**env, LAUNCH_COOKIE_KEY: LAUNCH_COOKIE_VALUE}
        self._startup_timeout = startup_timeout
        self._grace = grace
        self._stderr_tail: collections.deque[str] = collections.deque(maxlen=_STDERR_TAIL_LINES)
        self._stderr_done = trio.Event()
        self._stderr_lines = _Lines(self._log_stderr)
        self.process: trio.Process | None = None
        self.exited = trio.Event()
        self._killed_because: str | None = None
        self._socket: str | None = None
        self._stdout_drained = False
        self._nursery: trio.Nursery | None = None

    def remove_on_exit(self, socket_path: str) -> None:
        """Remove the socket file at ``socket_path``, and its folder, once the process is gone (a
        sidecar that did not exit in order leaves them behind)."""
        self._socket = socket_path

    @property
    def name(self) -> str:
        return os.path.basename(self.command[0])

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    @property
    def stderr_tail(self) -> str:
        return "\n".join(self._stderr_tail)

    def has_exited(self) -> bool:
        """Whether the process has exited, though ``exited`` may not be set yet."""
        return self.process is not None and self.process.poll() is not None

    def kill(self, because: str) -> None:
        """Kill the running process (SIGKILL, which a stopped one obeys too); `death_error` then
        says it was killed ``because``."""
        if self.process is not None and self.process.returncode is None:
            self._killed_because = because
            self.process.kill()

    def death_error(self) -> ErrorFactory:
        """The error for calls that the sidecar's death cut off."""
        returncode = self.process.returncode if self.process else None
        if self._killed_because is not None:
            how = f"was killed by the client: {self._killed_because}"
        else:
            how = f"exited unexpectedly with {describe_status(returncode)}"
        return error_factory(
            SidecarError,
            f"the sidecar {self.name!r} {how}",
            returncode=returncode,
            stderr_tail=self.stderr_tail,
        )

    @trio.lowlevel.enable_ki_protection
    async def run(self, *, task_status: trio.TaskStatus[Handshake]) -> None:
        try:
            process = await trio.lowlevel.open_process(
                self.command,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=self._env,
            )
        except OSError as exc:
            if self._socket is not None:
                _remove_socket(self._socket)
            raise SidecarError(f"cannot start the sidecar {self.command[0]!r}: {exc}") from exc
        self.process = process
        failure: SidecarError | None = None
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                nursery.start_soon(self._drain_stderr)
                try:
                    handshake = await self._ready(self)
                except SidecarError as exc:
                    failure = exc
                    # It failed to start: no point in a graceful stop.
                    self._grace = 0
                else:
                    if self.transport == "unix":
                        self._socket = handshake.address
                    task_status.started(handshake)
                    if self.transport != "pipe":
                        # Stdout carries nothing after the handshake here; a method that prints
                        # anyway would block once the pipe is full, unless someone reads it.
                        self.drain_stdout(handshake.rest, after_handshake=True)
                    await process.wait()
                    with trio.move_on_after(_STDERR_SETTLE):
                        await self._stderr_done.wait()
                    self.exited.set()
                nursery.cancel_scope.cancel()
        finally:
            with trio.CancelScope(shield=True):
                await self._stop()
            if self._socket is not None:
                _remove_socket(self._socket)
            self.exited.set()
        if failure is not None:
            # Its stderr is read to the end now: the error carries all of its last words, not
            # only those that had arrived when the start failed.
            failure.refresh_stderr_tail(self.stderr_tail)
            raise failure

    def drain_stdout(self, already: bytes = b"", *, after_handshake: bool = False) -> None:
        """Log what the process writes to stdout from now on (after ``already``), unless that is
        done already: in socket modes stdout carries nothing a client reads."""
        if not self._stdout_drained:
            assert self._nursery is not None
            self._stdout_drained = True
            self._nursery.start_soon(self._drain_stdout, already, after_handshake)

    async def probe_until_ready(self, address: str) -> Handshake:
        """A GoTask sidecar's readiness: connect to ``address`` until it accepts (or use the pipe),
        then check that it answers in goridge. Its stdout is drained meanwhile (socket modes)."""
        if self.transport != "pipe":
            self.drain_stdout()
        process = self.process
        assert process is not None and process.stdin is not None and process.stdout is not None
        where = "its pipe" if self.transport == "pipe" else repr(address)
        delay = _FIRST_RETRY
        with trio.move_on_after(self._startup_timeout):
            try:
                if self.transport == "pipe":
                    await goridge_probe(process.stdin, process.stdout)
                    return Handshake("-", b"")  # as the gotask protocol's handshake says
                while True:
                    try:
                        stream = await open_stream(address)
                    except OSError:
                        if process.poll() is not None:
                            raise PeerClosed("it exited") from None
                        await trio.sleep(delay)
                        delay = min(2 * delay, _LAST_RETRY)
                        continue
                    async with stream:
                        await goridge_probe(stream, stream)
                    return Handshake(address, b"")
            except ProtocolError as exc:
                raise SidecarError(
                    f"the sidecar {self.name!r} does not answer in GoTask's goridge format on {where}: "
                    f"{exc}; is it built with GoTask (github.com/hyperf/gotask)?",
                    stderr_tail=self.stderr_tail,
                ) from exc
            except (PeerClosed, trio.BrokenResourceError, OSError) as exc:
                with trio.move_on_after(_EXIT_NOTICE):
                    await process.wait()
                if process.returncode is None:
                    raise SidecarError(
                        f"the sidecar {self.name!r} closed {where} without answering in GoTask's goridge "
                        "format; is it built with GoTask (github.com/hyperf/gotask)?",
                        stderr_tail=self.stderr_tail,
                    ) from exc
                with trio.move_on_after(_STDERR_SETTLE):
                    await self._stderr_done.wait()
                raise SidecarError(
                    f"the sidecar {self.name!r} exited with {describe_status(process.returncode)} "
                    f"before it listened on {where}",
                    returncode=process.returncode,
                    stderr_tail=self.stderr_tail,
                ) from None
        raise SidecarError(
            f"the sidecar {self.name!r} did not answer on {where} within {self._startup_timeout} s "
            "(startup_timeout); does it take -address (and -listen-on-pipe), as GoTask sidecars do?",
            stderr_tail=self.stderr_tail,
        )

    async def read_handshake(self) -> Handshake:
        """The readiness of a sidecar of this project: the handshake line it prints on stdout.

        Lines it prints before (a banner, a dependency's ``init``) are logged and skipped, up to
        `_MAX_BEFORE_HANDSHAKE` bytes: stdout belongs to the handshake, but only from there on."""
        process = self.process
        assert process is not None and process.stdout is not None
        data = bytearray()
        before: list[str] = []
        skipped = 0
        marker = HANDSHAKE_MARKER.encode() + b"|"
        with trio.move_on_after(self._startup_timeout) as timeout:
            while True:
                line, newline, rest = bytes(data).partition(b"\n")
                if newline and not line.startswith(marker):
                    text = _text(line)
                    logger.warning(
                        "%s printed to stdout before its handshake line (skipped; print to stderr "
                        "instead): %s",
                        self.name,
                        text,
                    )
                    before.append(text)
                    skipped += len(line) + 1
                    data = bytearray(rest)
                    if skipped > _MAX_BEFORE_HANDSHAKE:
                        raise SidecarError(
                            f"the sidecar {self.name!r} printed more than {_MAX_BEFORE_HANDSHAKE} bytes "
                            f"to stdout before its handshake line{_printed_before(before)}",
                            stderr_tail=self.stderr_tail,
                        )
                    continue
                if newline or len(data) > MAX_HANDSHAKE_LINE:
                    break
                chunk = await process.stdout.receive_some(MAX_HANDSHAKE_LINE)
                if not chunk:
                    break
                data += chunk
        if timeout.cancelled_caught:
            raise SidecarError(
                f"the sidecar {self.name!r} printed no handshake within {self._startup_timeout} s "
                f"(startup_timeout){_printed_before(before)}",
                stderr_tail=self.stderr_tail,
            )
        line, newline, rest = bytes(data).partition(b"\n")
        if not newline:
            if len(data) > MAX_HANDSHAKE_LINE:
                raise SidecarError(
                    f"the sidecar {self.name!r} printed {len(data)} bytes without a newline instead of "
                    f"a handshake line: {bytes(data[:80])!r}...{_printed_before(before)}"
                )
            # stdout closed: the process is exiting, or has. Say why, with its last words.
            with trio.move_on_after(_EXIT_NOTICE):
                await process.wait()
            with trio.move_on_after(_STDERR_SETTLE):
                await self._stderr_done.wait()
            raise SidecarError(
                f"the sidecar {self.name!r} exited with {describe_status(process.returncode)} "
                f"before its handshake{_printed_before(before)}",
                returncode=process.returncode,
                stderr_tail=self.stderr_tail,
            )
        try:
            address = parse_handshake(line, self.transport)
        except ProtocolError as exc:
            raise SidecarError(str(exc), stderr_tail=self.stderr_tail) from exc
        return Handshake(address, rest)

    @trio.lowlevel.enable_ki_protection
    async def _drain_stderr(self) -> None:
        """Log stderr line by line until EOF. Cancelled, it can be called again to go on."""
        assert self.process is not None and self.process.stderr is not None
        await _drain(self.process.stderr, self._stderr_lines)
        self._stderr_done.set()

    async def _drain_stdout(self, already: bytes, after_handshake: bool) -> None:
        """Log what the sidecar writes to stdout (in socket modes) until EOF."""
        assert self.process is not None and self.process.stdout is not None
        where = "stdout, which should carry nothing after the handshake" if after_handshake else "stdout"

        def log(line: str) -> None:
            logger.warning("%s (%s): %s", self.name, where, line)

        lines = _Lines(log)
        lines.feed(already)
        await _drain(self.process.stdout, lines)

    def _log_stderr(self, line: str) -> None:
        self._stderr_tail.append(line)
        logger.warning("%s: %s", self.name, line)

    @trio.lowlevel.enable_ki_protection
    async def _stop(self) -> None:
        process = self.process
        assert process is not None
        if process.returncode is None:
            await self._quit(process, self._grace)
        if process.stdin is not None:
            await trio.aclose_forcefully(process.stdin)
        if process.returncode is None:
            process.terminate()
            with trio.move_on_after(1):
                await process.wait()
        if process.returncode is None:
            process.kill()
            await process.wait()
        if not self._stderr_done.is_set():
            # Its last words: what it wrote just before exiting is still in the pipe.
            with trio.move_on_after(1):
                await self._drain_stderr()
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                await trio.aclose_forcefully(stream)


class _Lines:
    """Splits bytes into lines for ``log``, keeping an unfinished last line for the next chunk."""

    def __init__(self, log: Callable[[str], None]) -> None:
        self._log = log
        self._partial = b""

    def feed(self, chunk: bytes | bytearray) -> None:
        *lines, self._partial = (self._partial + chunk).split(b"\n")
        for raw in lines:
            self._log(_text(raw))

    def flush(self) -> None:
        if self._partial:
            self._log(_text(self._partial))
            self._partial = b""


def _printed_before(before: list[str]) -> str:
    """What a message about a failed start adds when the sidecar printed lines before its
    handshake: they are no handshake, and a gotask sidecar prints its handshake first."""
    if not before:
        return ""
    return (
        f"; before it, it printed {len(before)} line(s) to stdout, which is not a gotask sidecar's "
        f"handshake (the first: {before[0][:200]!r}): is this a sidecar built with the gotask Go "
        "package, calling gotask.Run?"
    )


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "replace").rstrip("\r")


async def _drain(stream: trio.abc.ReceiveStream, lines: _Lines) -> None:
    """Feed ``lines`` from ``stream`` until EOF, then flush. Cancelled, the unfinished line stays
    in ``lines`` for the next call."""
    try:
        while chunk := await stream.receive_some(65536):
            lines.feed(chunk)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass
    lines.flush()


def _remove_socket(path: str) -> None:
    """Remove the socket file, and its folder if that is then empty, that a sidecar which did not
    exit in order (it was killed, or crashed) left behind; one that did removed them itself."""
    with contextlib.suppress(OSError):
        if stat.S_ISSOCK(os.lstat(path).st_mode):
            os.unlink(path)
    with contextlib.suppress(OSError):
        os.rmdir(os.path.dirname(path))


def describe_status(returncode: int | None) -> str:
    if returncode is None:
        return "an unknown status"
    if returncode < 0:
        try:
            return f"signal {signal.Signals(-returncode).name}"
        except ValueError:
            return f"signal {-returncode}"
    return f"status {returncode}"
