"""The wire dialects, each decided in one place: how a sidecar of that dialect is launched, when it
is ready, how it is stopped, how a connection to it is opened over a socket or its pipe, which
sans-I/O protocol the connection speaks, and what it lacks.

The public keyword ``protocol=`` names a dialect; `dialect` turns the name into its object once,
and the layers below see only what that object hands them (a `Sidecar` built to its rules, a
`Connect`, an `Opened` whose ``speaks`` makes the sans-I/O protocol). Adding a dialect is a class
here and a row in `DIALECTS`.
"""

from __future__ import annotations

import abc
import os
import secrets
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from types import MappingProxyType
from typing import ClassVar, Final, Literal, final

import trio

from ._address import MAX_SOCKET_PATH, Transport, free_local_port
from ._errors import SidecarError
from ._goridge_opening import goridge_connect, goridge_pipe_connect
from ._opening import Connect, Opened, pipe_connect, socket_connect
from ._settings import LaunchSettings, Limits, RemoteSettings
from ._sidecar import Handshake, Sidecar, terminate

SECRET_ENV: Final = "GOTASK_SECRET"


@dataclass(frozen=True)
class Launch:
    """What a launched sidecar needs to serve one transport: its flags, and the secret this
    client sets in its ``GOTASK_SECRET`` (``None``: none, and none inherited either)."""

    transport: Transport
    flags: tuple[str, ...]
    secret: str | None

    @staticmethod
    def plan(transport: Transport) -> Launch:
        if transport == "unix":
            # No -address: the sidecar makes a private folder for its socket and removes it when
            # it exits, even after this process was killed.
            return Launch(transport, (), secrets.token_urlsafe(32))
        if transport == "tcp":
            return Launch(transport, ("-address", "127.0.0.1:0"), secrets.token_urlsafe(32))
        # The pipe reaches only the child: nothing to authenticate.
        return Launch(transport, ("-listen-on-pipe",), None)

    def environment(self, inherited: Mapping[str, str]) -> dict[str, str]:
        """The sidecar's environment: ``inherited``, with ``GOTASK_SECRET`` set to this launch's
        secret, or removed (a secret the user exported must not stop the client connecting)."""
        env = {k: v for k, v in inherited.items() if k != SECRET_ENV}
        if self.secret is not None:
            env[SECRET_ENV] = self.secret
        return env


def go_duration(seconds: float) -> str:
    """``seconds`` as a Go duration flag takes it: ``2s``, ``0.25s``, at most ``1000000000s``."""
    text = f"{min(seconds, 1e9):.6f}".rstrip("0").rstrip(".")
    return f"{text}s"


def goridge_address(transport: Transport) -> str:
    """Where a GoTask sidecar, which cannot pick its own address and report it, is told to
    listen: a socket in a new private folder (removed with the socket when the sidecar is
    stopped), a free loopback port, or nowhere (``""``: the pipe alone)."""
    if transport == "unix":
        folder = tempfile.mkdtemp(prefix="gotask-")
        if len(folder) + len("/gotask.sock") > MAX_SOCKET_PATH:  # a long TMPDIR
            os.rmdir(folder)
            folder = tempfile.mkdtemp(prefix="gotask-", dir="/tmp")
        return os.path.join(folder, "gotask.sock")
    if transport == "tcp":
        return f"127.0.0.1:{free_local_port()}"
    return ""


def goridge_flags(transport: Transport, address: str) -> list[str]:
    """A GoTask sidecar's flags for ``transport``: ``-listen-on-pipe`` keeps the ``-address``
    listener too unless the address is empty."""
    if transport == "pipe":
        return ["-listen-on-pipe", "-address", ""]
    return ["-address", address]


DialectName = Literal["gotask", "goridge"]
"""The names ``protocol=`` takes: those of `DIALECTS`."""


class Launcher(abc.ABC):
    """The two factories a `Supervisor` takes, for one `open_gotask`: each run of the sidecar,
    and how to connect to a run once it is ready."""

    def __init__(self, launch: LaunchSettings, limits: Limits) -> None:
        self.launch = launch
        self.limits = limits

    @abc.abstractmethod
    def new_sidecar(self) -> Sidecar: ...

    def new_connect(self, process: Sidecar, handshake: Handshake) -> Connect:
        if self.launch.transport != "pipe":
            return self.socket_connect(handshake.address)
        child = process.process
        assert child is not None and child.stdin is not None and child.stdout is not None
        connect = self.pipe_connect(child.stdin, child.stdout, handshake.rest)

        async def connect_or_stop() -> Opened:
            try:
                return await connect()
            except SidecarError as exc:
                if process.exited.is_set():
                    raise
                # Its only connection is gone (it froze, or broke the protocol) and it lives on:
                # it can serve no one. Once it is stopped, the supervisor starts another if its
                # policy says so, and later calls wait for that one.
                process.kill("its pipe broke, and a pipe cannot be reopened")
                await process.exited.wait()
                raise SidecarError(
                    f"{exc}: the sidecar was killed (a restart policy starts a new one)"
                ) from exc

        return connect_or_stop

    @abc.abstractmethod
    def socket_connect(self, address: str) -> Connect: ...

    @abc.abstractmethod
    def pipe_connect(
        self, stdin: trio.abc.SendStream, stdout: trio.abc.ReceiveStream, rest: bytes
    ) -> Connect: ...


_WHERE: Final = (
    "choose where it listens with transport= ('unix', 'tcp' or 'pipe'); to serve at an address of "
    "your own, start the sidecar yourself and call connect_gotask"
)


class Dialect(abc.ABC):
    """One wire dialect: its name (the ``protocol=`` keyword's value), its defaults, what it
    lacks, and how to launch and reach its sidecars."""

    name: ClassVar[str]
    pool_size: ClassVar[int]
    """The default ``pool_size``."""
    max_inflight: ClassVar[int]
    """The default ``max_inflight``."""
    lacks: ClassVar[tuple[str, ...]] = ()
    """Keyword arguments that mean nothing in this dialect; `check` refuses them."""
    takes_secret: ClassVar[bool]
    """Whether its sidecars can ask connections for a shared secret."""
    sets_flags: ClassVar[Mapping[str, str]]
    """The sidecar flags a launch sets itself, each with the keyword to use instead."""
    carries_metadata: ClassVar[bool] = True
    """Whether a request carries application metadata (the tracing interceptor sends its trace
    context only then)."""

    def check(self, **given: object) -> None:
        """Refuse the options in ``given`` that are set (not ``None``) but mean nothing here."""
        lacking = [name for name, value in given.items() if value is not None and name in self.lacks]
        if lacking:
            raise ValueError(self.lacking_message(lacking))

    def lacking_message(self, lacking: Sequence[str]) -> str:
        return f"the {self.name} protocol has no {', '.join(lacking)}"

    def check_args(self, args: Sequence[str]) -> None:
        """Refuse, in a launched sidecar's ``args``, a flag the launch sets itself: given twice,
        Go's flag package keeps the last, so the user's would be silently overridden, or would
        break the launch."""
        for arg in args:
            if arg == "--":
                return  # the flag package stops reading flags here
            name = arg.lstrip("-").split("=", 1)[0] if arg.startswith("-") else ""
            if name in self.sets_flags:
                raise ValueError(
                    f"args holds {arg!r}, a flag open_gotask sets itself when it starts the sidecar: "
                    f"{self.sets_flags[name]}"
                )

    @abc.abstractmethod
    def launcher(self, launch: LaunchSettings, limits: Limits) -> Launcher:
        """How each run of a launched sidecar is started, and connected to."""

    @abc.abstractmethod
    def connect(
        self, remote: RemoteSettings, limits: Limits, address: str, hostname: str | None = None
    ) -> Connect:
        """How to open connections to the sidecar at ``address`` (found by the DNS name
        ``hostname``, if any), started elsewhere."""


@final
class Native(Dialect):
    """This project's protocol (docs/protocol.md): a handshake line, greetings, host calls."""

    name = "gotask"
    pool_size = 1
    max_inflight = 1024
    takes_secret = True
    sets_flags = MappingProxyType(
        {
            "address": _WHERE,
            "listen-on-pipe": _WHERE,
            "max-frame-size": "use max_frame_size=, which sets the limit of both sides",
            "grace": "use shutdown_grace=, which the sidecar is given as its -grace",
        }
    )

    def launcher(self, launch: LaunchSettings, limits: Limits) -> Launcher:
        return NativeLauncher(launch, limits)

    def connect(
        self, remote: RemoteSettings, limits: Limits, address: str, hostname: str | None = None
    ) -> Connect:
        return socket_connect(
            address,
            secret=remote.secret,
            ssl_context=remote.ssl_context,
            server_hostname=remote.server_hostname or hostname,
            max_frame_size=limits.max_frame_size,
            connect_timeout=remote.connect_timeout,
            launched=False,
            max_host_calls=limits.max_host_calls,
        )


class NativeLauncher(Launcher):
    """Runs of a sidecar of this project: its flags, and the fresh secret (`secret`) it is given
    in its environment for the socket transports."""

    def __init__(self, launch: LaunchSettings, limits: Limits) -> None:
        super().__init__(launch, limits)
        plan = Launch.plan(launch.transport)
        self.secret: Final = plan.secret
        self._env = plan.environment(launch.env)
        self._flags = [
            *plan.flags,
            "-max-frame-size",
            str(limits.max_frame_size),
            # The sidecar's own grace (Go's default is longer), so that it cancels what still
            # runs and exits by the time this client stops waiting, instead of being killed.
            "-grace",
            go_duration(launch.grace),
        ]

    def new_sidecar(self) -> Sidecar:
        launch = self.launch
        return Sidecar(
            [*launch.command, *self._flags],
            transport=launch.transport,
            env=self._env,
            startup_timeout=launch.startup_timeout,
            grace=launch.grace,
        )

    def socket_connect(self, address: str) -> Connect:
        return socket_connect(
            address,
            secret=self.secret,
            max_frame_size=self.limits.max_frame_size,
            connect_timeout=self.launch.startup_timeout,
            launched=True,
            max_host_calls=self.limits.max_host_calls,
        )

    def pipe_connect(
        self, stdin: trio.abc.SendStream, stdout: trio.abc.ReceiveStream, rest: bytes
    ) -> Connect:
        return pipe_connect(
            stdin,
            stdout,
            rest,
            max_frame_size=self.limits.max_frame_size,
            timeout=self.launch.startup_timeout,
            max_host_calls=self.limits.max_host_calls,
        )


@final
class Goridge(Dialect):
    """GoTask's own format (docs/goridge.md): no handshake line or greeting, readiness by a probe
    call, SIGTERM to stop, one call at a time per connection."""

    name = "goridge"
    # GoTask's server can freeze a connection whose calls' frames meet in one read (docs/goridge.md,
    # "One call per connection"): one call per connection, and more connections.
    pool_size = 32
    max_inflight = 1
    lacks = ("secret", "ssl_context", "handlers", "config", "host_interceptors")
    takes_secret = False
    carries_metadata = False
    sets_flags = MappingProxyType({"address": _WHERE, "listen-on-pipe": _WHERE})

    def lacking_message(self, lacking: Sequence[str]) -> str:
        return (
            f"GoTask's goridge format has no {', '.join(lacking)}: drop them, or use protocol='gotask' "
            "with a sidecar built on this project's Go library"
        )

    def launcher(self, launch: LaunchSettings, limits: Limits) -> Launcher:
        return _GoridgeLauncher(launch, limits)

    def connect(
        self, remote: RemoteSettings, limits: Limits, address: str, hostname: str | None = None
    ) -> Connect:
        return goridge_connect(
            address,
            max_frame_size=limits.max_frame_size,
            max_inflight=limits.max_inflight,
            connect_timeout=remote.connect_timeout,
        )


class _GoridgeLauncher(Launcher):
    def __init__(self, launch: LaunchSettings, limits: Limits) -> None:
        super().__init__(launch, limits)
        # GoTask sidecars inherit the environment as this project's do, secret aside.
        self._env = Launch.plan(launch.transport).environment(launch.env)

    def new_sidecar(self) -> Sidecar:
        launch = self.launch
        # It cannot pick its own address and report it: it is told where to listen.
        address = goridge_address(launch.transport)
        sidecar = Sidecar(
            [*launch.command, *goridge_flags(launch.transport, address)],
            transport=launch.transport,
            env=self._env,
            startup_timeout=launch.startup_timeout,
            grace=launch.grace,
            ready=partial(Sidecar.probe_until_ready, address=address),
            quit=terminate,
        )
        if launch.transport == "unix":
            sidecar.remove_on_exit(address)
        return sidecar

    def socket_connect(self, address: str) -> Connect:
        return goridge_connect(
            address,
            max_frame_size=self.limits.max_frame_size,
            max_inflight=self.limits.max_inflight,
            connect_timeout=self.launch.startup_timeout,
        )

    def pipe_connect(
        self, stdin: trio.abc.SendStream, stdout: trio.abc.ReceiveStream, rest: bytes
    ) -> Connect:
        limits = self.limits
        return goridge_pipe_connect(
            stdin, stdout, rest, max_frame_size=limits.max_frame_size, max_inflight=limits.max_inflight
        )


DIALECTS: Final[Mapping[str, Dialect]] = {d.name: d for d in (Native(), Goridge())}
"""Every dialect, by the name ``protocol=`` gives it."""


def dialect(name: object) -> Dialect:
    """The dialect that ``protocol=name`` asks for; `ValueError` for a name there is none of."""
    if not isinstance(name, str) or name not in DIALECTS:
        raise ValueError(f"protocol must be one of {', '.join(DIALECTS)}, not {name!r}")
    return DIALECTS[name]
