"""The public entry points: `open_gotask`, `connect_gotask` and the `GoTask` handle they give."""

from __future__ import annotations

import dataclasses
import os
import ssl
import sys
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Any, Final, final

import trio

from ._address import Transport, check_address
from ._build import build_sidecar
from ._dialect import Dialect, DialectName, dialect
from ._endpoints import Endpoints
from ._errors import SidecarError, lost_without_explanation
from ._handlers import Handler, Handlers
from ._intercept import CallInfo, HostInterceptor, Interceptor, check_interceptors, checked_metadata, compose
from ._names import DEFAULT_RESOLVE_INTERVAL, Name, dns_name
from ._pool import Pool, Router
from ._settings import DEFAULT_KEEPALIVE_TIMEOUT, LaunchSettings, Limits, PoolSettings, RemoteSettings
from ._statistics import EndpointStatistics
from ._stream import DEFAULT_WINDOW, ItemStream, StreamOpening, check_window
from ._supervisor import RestartPolicy, Supervisor
from ._tracing import tracing_interceptors
from ._wire import DEFAULT_MAX_FRAME_SIZE

if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup  # type: ignore[import-not-found,unused-ignore]

DEFAULT_CONNECT_TIMEOUT: Final = 10.0
DEFAULT_MAX_HOST_CALLS: Final = 64
SIDECAR_ENV: Final = "GOTASK_SIDECAR"

SidecarSpec = str | os.PathLike[str] | Sequence[str | os.PathLike[str]]


@dataclass(frozen=True)
class GoTaskStatistics:
    """A snapshot of a `GoTask`, from `GoTask.statistics`."""

    restarts: int
    """Times the sidecar was restarted (see `RestartPolicy`)."""
    connections: int
    """Open connections to the running sidecar."""
    connections_opened: int
    """Connections opened to the running sidecar over its life: more than `connections` when
    some broke and were replaced."""
    in_flight: int
    """Calls running now (including callers waiting for a free slot). A cancelled call has left
    this count; see `abandoned`."""
    calls_done: int
    """Calls that returned a result."""
    calls_failed: int
    """Calls that raised an error (from Go, the sidecar's death, bad arguments...)."""
    calls_cancelled: int
    """Calls that the caller's cancel scopes cancelled."""
    endpoints: tuple[EndpointStatistics, ...] = ()
    """Each sidecar of a `connect_gotask` given several addresses (empty otherwise)."""
    abandoned: int = 0
    """Calls cancelled in Python that still run in Go: each keeps its slot until the Go method
    returns (at once for a method that heeds its context; when it ends for one that does not, or
    always in GoTask's format, which cannot cancel). ``in_flight + abandoned`` near
    ``pool_size * max_inflight`` means callers wait for slots."""
    streams: int = 0
    """Streams open now (`GoTask.stream`): each holds a slot until it ends, and is counted in
    `in_flight` until its consumer closes it."""


@final
class GoTask:
    """A sidecar to call. Get one from `open_gotask` or `connect_gotask`; don't construct it."""

    def __init__(
        self,
        router: Router,
        handlers: Handlers | None = None,
        interceptors: Sequence[Interceptor] = (),
    ) -> None:
        self._router = router
        self._handlers = handlers if handlers is not None else Handlers()
        self._chain: Callable[[CallInfo], Awaitable[Any]] | None = (
            compose(interceptors, self._send) if interceptors else None
        )
        """The interceptors around `_send`, or ``None`` when there are none."""
        # trio.run cannot nest in one thread, and this GoTask's tasks live in the run that
        # opened it: the thread tells that run from any other, at the cost of one C call.
        self._thread = threading.get_ident()
        self._done = 0
        self._failed = 0
        self._cancelled = 0

    async def call(self, method: str, arg: Any = None) -> Any:
        """Call the Go method ``method`` (``"Service.Method"``) with ``arg``; return its reply.

        ``arg`` and the reply are carried as msgpack (docs/protocol.md, section 3). The call runs under
        the caller's cancel scopes: when they cancel it, it returns at once (raising `trio.Cancelled`),
        the Go handler's context is cancelled, and the connection stays usable; the caller's deadline
        becomes the Go context's deadline. A call is never retried.

        Raises `RemoteError` (or a subclass) for an error from Go, `BadReply` for a reply that
        cannot reach Python, `SidecarError` when the sidecar dies or its connection is lost,
        `ProtocolError` for malformed replies, and `TypeError`, `ValueError` or `OverflowError`
        for a ``method`` that is not a string or an argument msgpack cannot carry (or one larger
        than the frame limit), before anything is sent. A `GoTask` belongs to the `trio.run` that
        opened it: calling it from another raises `RuntimeError`.

        The call runs through the interceptors given to `open_gotask` or `connect_gotask`, which
        may change it, answer it themselves, or raise (their exceptions reach the caller as the
        call's would).
        """
        if type(method) is not str:
            raise TypeError(f"method must be a str such as 'App.Hi', not {type(method).__name__}: {method!r}")
        if threading.get_ident() != self._thread:
            raise RuntimeError(
                "this GoTask belongs to the trio.run of another thread: open a GoTask in each "
                "trio.run that makes calls, or reach this one with trio.from_thread.run"
            )
        chain = self._chain
        try:
            if chain is None:
                result = await self._router.call(method, arg)
            else:
                result = await chain(CallInfo(method, arg, {}))
        except trio.Cancelled:
            self._cancelled += 1
            raise
        except BaseException:
            self._failed += 1
            raise
        self._done += 1
        return result

    def _send(self, info: CallInfo) -> Awaitable[Any]:
        """The end of the interceptors' chain: the call as they left it, its metadata checked."""
        method = info.method
        if type(method) is not str:
            raise TypeError(
                f"an interceptor set CallInfo.method to {method!r}: it must be a str such as 'App.Hi'"
            )
        metadata = info.metadata
        checked = checked_metadata(method, metadata) if metadata or type(metadata) is not dict else None
        if info.stream:
            return self._router.open_stream(method, info.arg, check_window(info.window), checked)
        return self._router.call(method, info.arg, checked)

    async def _open_intercepted(self, method: str, arg: Any, window: int) -> ItemStream:
        """Open a stream through the interceptors (`CallInfo.stream`)."""
        assert self._chain is not None
        stream = await self._chain(CallInfo(method, arg, {}, True, window))
        if not isinstance(stream, ItemStream):
            raise TypeError(
                f"an interceptor returned {stream!r} for the stream {method}: it must return the "
                "ItemStream that call_next returned"
            )
        return stream

    def stream(
        self, method: str, arg: Any = None, *, window: int = DEFAULT_WINDOW
    ) -> AbstractAsyncContextManager[ItemStream]:
        """Open a stream of the Go stream method ``method`` with ``arg``, to use as
        ``async with gt.stream("Mongo.Find", query) as docs: async for doc in docs: ...``
        (docs/streams.md).

        ``async with`` sends the request (waiting for a free slot if need be) and gives an
        `ItemStream`, a Trio receive channel of the items in the order Go sent them, which
        raises the Go method's error, if it returns one, after the items sent before it. Leaving
        the block before the end, or closing the stream, cancels the Go method's context. The
        deadline of the caller's scopes when it opens becomes the Go context's deadline.

        ``window`` is the credit, in bytes of encoded items: the Go method's ``Send`` blocks
        while that much waits here unread, so a stream holds at most about ``window`` bytes
        (plus one item) however long it is. Raises as `call` does for the method and the
        argument, `GoTaskError` for a sidecar that does not serve streams (one built with an
        older Go package, or GoTask's wire format), and `RemoteError` ``stream_mismatch`` (at
        the first `ItemStream.receive`) for a method that returns one reply.

        The interceptors given to `open_gotask` run as the stream opens (`CallInfo.stream`), and
        the metadata they set is sent with the request.
        """
        if type(method) is not str:
            raise TypeError(
                f"method must be a str such as 'App.Count', not {type(method).__name__}: {method!r}"
            )
        if threading.get_ident() != self._thread:
            raise RuntimeError(
                "this GoTask belongs to the trio.run of another thread: open a GoTask in each "
                "trio.run that makes calls, or reach this one with trio.from_thread.run"
            )
        opener = self._router.open_stream if self._chain is None else self._open_intercepted
        return StreamOpening(opener, method, arg, check_window(window))

    def register(self, name: str, function: Handler, *, thread: bool = False) -> None:
        """Let the sidecar call ``function`` as ``name`` (``gotask.CallHost(ctx, name, arg, &reply)``
        in Go), on every connection, from now on; a name registered again is replaced.

        ``function`` takes the call's one argument (or none, when Go passes ``nil``) and returns
        the result; it may be async. It runs as a task of this GoTask, under the Go caller's
        deadline, and is cancelled when the Go context is: an async function sees `trio.Cancelled`.
        A plain function runs in the event loop, so it must be quick; with ``thread=True`` it runs
        in a worker thread instead (cancelling the call then abandons the thread). An exception
        reaches Go as a ``*gotask.HostError`` (a Go type) carrying its type and message.
        """
        self._handlers.register(name, function, thread=thread)

    def register_service(self, name: str, service: object, *, thread: bool = False) -> list[str]:
        """`register` each public method of ``service`` as ``"name.Method"``; return the names."""
        return self._handlers.register_service(name, service, thread=thread)

    def service(self, name: str) -> Service:
        """A proxy whose attributes are the methods of the Go service ``name``:
        ``await gt.service("App").Hi("Reasno")`` is ``await gt.call("App.Hi", "Reasno")``."""
        return Service(self, name)

    def statistics(self) -> GoTaskStatistics:
        """Counters and gauges of this GoTask, as a frozen record."""
        load = self._router.statistics()
        return GoTaskStatistics(
            restarts=load.restarts,
            connections=load.connections,
            connections_opened=load.opened,
            in_flight=load.in_flight,
            calls_done=self._done,
            calls_failed=self._failed,
            calls_cancelled=self._cancelled,
            endpoints=load.endpoints,
            abandoned=load.abandoned,
            streams=load.streams,
        )

    @property
    def address(self) -> str:
        """Where the sidecar listens: a socket path, ``host:port``, or ``-`` for the pipe transport."""
        return self._router.address

    @property
    def pid(self) -> int | None:
        """The running sidecar's process id, or ``None`` when it was started elsewhere (or is
        restarting)."""
        return self._router.pid


@final
class Service:
    """Calls the methods of one Go service by attribute: see `GoTask.service`."""

    def __init__(self, gotask: GoTask, name: str) -> None:
        self._gotask = gotask
        self._name = name

    def __getattr__(self, method: str) -> _Method:
        if method.startswith("_"):
            raise AttributeError(method)
        return _Method(self._gotask, f"{self._name}.{method}")

    def __repr__(self) -> str:
        return f"<Service {self._name!r}>"


@final
class _Method:
    __slots__ = ("_gotask", "_name")

    def __init__(self, gotask: GoTask, name: str) -> None:
        self._gotask = gotask
        self._name = name

    async def __call__(self, arg: Any = None) -> Any:
        return await self._gotask.call(self._name, arg)


@asynccontextmanager
async def open_gotask(
    sidecar: SidecarSpec | None = None,
    *,
    args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    transport: Transport = "unix",
    pool_size: int | None = None,
    startup_timeout: float = 10.0,
    restart: RestartPolicy | None = None,
    handlers: Mapping[str, Handler] | None = None,
    config: Mapping[str, Any] | None = None,
    max_host_calls: int = DEFAULT_MAX_HOST_CALLS,
    max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
    max_inflight: int | None = None,
    shutdown_grace: float = 2.0,
    protocol: DialectName = "gotask",
    keepalive_timeout: float | None = DEFAULT_KEEPALIVE_TIMEOUT,
    interceptors: Sequence[Interceptor] = (),
    host_interceptors: Sequence[HostInterceptor] = (),
    tracing: bool | None = None,
) -> AsyncIterator[GoTask]:
    """Start a sidecar, wait for its handshake, and yield a `GoTask` to call it.

    ``sidecar`` is an executable, a command list (the program and its own arguments), or a folder
    holding a Go main package, which is built with ``go build`` into a per-user cache (rebuilt only
    when what it is built from changes). Without it, the ``GOTASK_SIDECAR`` environment variable
    names one. ``args`` are appended to the command, and the protocol's flags (``-address``,
    ``-listen-on-pipe``, ``-max-frame-size``) after them: since Go's flag package stops at the
    first positional argument, give the sidecar flags only. ``env`` adds to the inherited
    environment. The client owns the sidecar's ``GOTASK_SECRET``: it sets a fresh one for the
    socket transports and clears it for the pipe, whatever the environment says.

    ``transport`` is ``"unix"`` (a socket in a private temporary folder, which the sidecar makes and
    removes), ``"tcp"`` (loopback, a free port) or ``"pipe"`` (the child's stdin and stdout, one
    connection). Up to ``pool_size`` connections (default 1) are opened as load needs them (always
    one for the pipe), each carrying up to ``max_inflight`` calls at once (default 1024), or fewer
    if the sidecar's ``-max-inflight`` is lower; further callers wait. One connection is as fast as
    several, since its writer batches every queued frame into one write; more isolate a broken
    connection's calls and keep a huge frame from delaying small calls behind it. No frame larger than ``max_frame_size`` bytes
    (at least 1024) is accepted, or sent, on either side.

    ``startup_timeout`` bounds the wait for the handshake and each connection's greeting: it is
    the one deadline that is an argument, since start-up happens before the caller can scope it.
    Raises `SidecarError` if the program is missing, fails to build, exits early, is too slow, or
    speaks another protocol; `ValueError` or `TypeError` at once for an argument out of range.

    If the sidecar dies, the calls in flight fail with `SidecarError`, and so does every later
    call, unless ``restart`` (a `RestartPolicy`) says to start a new one. A connection on which the
    sidecar says nothing for ``keepalive_timeout`` seconds, not even to a ``$ping`` sent halfway
    through that silence, is taken for frozen: its calls fail with `SidecarError` and it is
    replaced (``None`` turns this off, e.g. while a debugger holds the sidecar; docs/timeouts.md).

    ``interceptors`` wrap every `GoTask.call`, the first outermost: each is an `Interceptor`, an
    async function of a `CallInfo` (the method, the argument and the metadata sent with the call,
    which it may change) and the rest of the chain, which it awaits or not. ``host_interceptors``
    wrap the handlers of host calls the same way, each a `HostInterceptor` given a `HostCallInfo`
    with the metadata Go sent. ``tracing`` puts OpenTelemetry's first in each chain: a CLIENT span
    per call, whose W3C trace context goes to Go in the call's metadata (``traceparent``), and a
    SERVER span per host call, the child of the trace context Go sent; spans go to the global
    tracer provider. ``None`` traces when ``opentelemetry`` (the API package) is installed,
    ``True`` requires it (`ImportError` otherwise), ``False`` does not trace.

    ``handlers`` maps names to the Python functions the sidecar may call (``gotask.CallHost`` in
    Go; see `GoTask.register`, which adds more later). ``config`` is what ``gotask.Config`` reads
    in Go, by key. Up to ``max_host_calls`` host calls run at once on each connection; 0 lets the
    sidecar call nothing, read no configuration and send no log records (its ``gotask`` log
    handler then writes to stderr, which goes to the ``trio_gotask.sidecar`` logger). Records
    sent through the ``gotask`` log handler go to the ``trio_gotask.go`` logger.

    On exit, calls still running fail, the connections close, the sidecar's stdin is closed (its
    signal to exit), and after ``shutdown_grace`` seconds it is terminated, then killed. The process
    is always reaped and its socket folder removed. An exception raised in the body reaches the
    caller unchanged (an exception group stays the same group), never wrapped by internal tasks.

    ``protocol="goridge"`` starts a sidecar built with the GoTask library (docs/goridge.md),
    unchanged: it is given ``-address`` (a socket in a private temporary folder, or a free
    loopback port) or ``-listen-on-pipe -address ""``, and is ready once it answers a probe call
    there, within ``startup_timeout``. Calls behave as with `connect_gotask`'s goridge format (one
    call per connection, 32 connections: over the pipe, one call at a time); there are no
    ``handlers``, ``config`` or ``host_interceptors``, and the process is stopped with SIGTERM
    (SIGKILL after ``shutdown_grace`` seconds). Its calls carry no metadata: tracing sends no
    trace context, and a call whose interceptors set metadata raises `GoTaskError`.
    """
    launch = LaunchSettings(
        command=args,
        transport=transport,
        env=env or {},
        startup_timeout=startup_timeout,
        grace=shutdown_grace,
    )
    speaks = dialect(protocol)
    settings = _pool_settings(
        speaks, pool_size, max_frame_size, max_inflight, max_host_calls, keepalive_timeout
    )
    registry = Handlers(handlers)
    if config is not None:
        registry.provide_config(config)
    if restart is not None and not isinstance(restart, RestartPolicy):
        raise TypeError(f"restart must be a RestartPolicy or None, not {restart!r}")
    speaks.check(handlers=handlers, config=config)
    speaks.check_args(launch.command)
    calls, hosts = _chains(speaks, interceptors, host_interceptors, tracing)
    registry.intercept(hosts)
    command = await _resolve_command(sidecar)
    launch = dataclasses.replace(launch, command=[*command, *args], env={**os.environ, **launch.env})
    launcher = speaks.launcher(launch, settings.limits)
    if transport == "pipe":
        settings = dataclasses.replace(settings, pool_size=1)  # a pipe is one connection

    async with _background() as nursery:
        supervisor = Supervisor(
            nursery,
            launcher.new_sidecar,
            launcher.new_connect,
            settings,
            restart=restart,
            handlers=registry,
        )
        await nursery.start(supervisor.run)
        try:
            yield GoTask(supervisor, registry, calls)
        finally:
            supervisor.close()


@asynccontextmanager
async def connect_gotask(
    address: str | Sequence[str],
    *,
    secret: str | None = None,
    ssl_context: ssl.SSLContext | None = None,
    server_hostname: str | None = None,
    pool_size: int | None = None,
    max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
    max_inflight: int | None = None,
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
    handlers: Mapping[str, Handler] | None = None,
    config: Mapping[str, Any] | None = None,
    max_host_calls: int = DEFAULT_MAX_HOST_CALLS,
    protocol: DialectName = "gotask",
    resolve_interval: float = DEFAULT_RESOLVE_INTERVAL,
    idempotent: Collection[str] = (),
    keepalive_timeout: float | None = DEFAULT_KEEPALIVE_TIMEOUT,
    interceptors: Sequence[Interceptor] = (),
    host_interceptors: Sequence[HostInterceptor] = (),
    tracing: bool | None = None,
) -> AsyncIterator[GoTask]:
    """Yield a `GoTask` for a sidecar started elsewhere (``./app -address ADDR -standalone``).

    ``address`` is a Unix socket path or a TCP ``host:port``, told apart by the rule the sidecar's
    ``-address`` follows (docs/protocol.md, section 5, "Addresses": a ``/`` makes a path, and an
    IPv6 host goes in brackets, ``[::1]:6001``). ``secret`` is presented first on every
    connection, for a sidecar started with ``GOTASK_SECRET`` set. ``ssl_context`` makes TCP
    connections speak TLS (to a sidecar started with ``-tls-cert`` and ``-tls-key``), checking the
    certificate against ``server_hostname`` (by default the address's host).

    One connection is opened at once, so that a wrong address, a missing or wrong secret, or a
    missing ``ssl_context`` fails here, with a `SidecarError` that says which is most likely;
    ``connect_timeout`` bounds each connection's opening and greeting. More connections are
    opened as load needs them, up to ``pool_size``. Arguments that cannot work (an address that is
    neither, TLS on a Unix socket, a limit out of range) raise `ValueError` or `TypeError` at once.
    ``pool_size``, ``max_inflight``, ``handlers``, ``config``, ``max_host_calls``,
    ``keepalive_timeout``, ``interceptors``, ``host_interceptors`` and ``tracing`` are as for
    `open_gotask`: a sidecar that stops answering (frozen, or behind a network path that went
    dark) fails its connections' calls after ``keepalive_timeout`` seconds instead of holding
    them. A call re-sent to another sidecar (see ``idempotent`` below) is sent with the same
    metadata and does not run the interceptors again.

    ``address`` may also be a list of addresses, one per sidecar (on other hosts, say): each call
    goes to the one in rotation with the fewest calls in flight. One that cannot be reached, or
    answers ``shutting_down`` (a sidecar stopping gracefully on SIGTERM), leaves the rotation for
    a while (0.5 s, doubling with each failure in a row, up to 30 s; a warning is logged), and
    the call, which it did not run, goes to another; a call raises only when every sidecar
    failed it. One whose calls fail three in a row (their deadlines passed with no answer from it,
    as when it is frozen, or their connections were lost) leaves the rotation the same way, as
    ``stalled`` or ``down``; after its rest, one call at a time tries it again. A call in flight on a sidecar that dies fails with `SidecarError`, and is never
    re-sent, unless its method is named in ``idempotent`` (methods that are safe to run twice):
    such a call is sent once more to each other sidecar in turn. `GoTask.statistics` reports each
    one. The first connection to each opens at once; `connect_gotask` fails only if none can be
    reached.

    An address written ``dns:host:port`` (or ``dns:///host:port``) stands for every address
    ``host`` resolves to (the pods of a Kubernetes headless Service, say), each a sidecar as
    above. The name is resolved again every ``resolve_interval`` seconds, and sooner (at most once
    a second) when one of its sidecars fails: an address that appears joins the rotation, one
    that is gone leaves it once its calls in flight are done. If the name cannot be resolved, its
    last addresses are kept and a warning is logged. With TLS, certificates are checked against
    ``host`` (or ``server_hostname``).

    ``protocol="goridge"`` speaks GoTask's own format to a sidecar built with the GoTask library
    (docs/goridge.md), unchanged: the same calls, a cancelled call returns at once and its late
    reply is dropped, but Go is not told (the format cannot), and there are no deadlines, secrets,
    TLS, metadata (as for `open_gotask`) or calls from Go to Python. Each connection then
    carries one call at a time, and ``pool_size`` defaults to 32: goridge's server can freeze a
    connection whose calls' frames meet in one of its reads. ``max_inflight`` above 1 puts more calls on each connection at that risk
    (docs/goridge.md, "One call per connection").
    The process is not ours: leaving the block closes the connections and nothing else.
    """
    if isinstance(address, str):
        addresses = [address]
    elif isinstance(address, Sequence) and address and all(isinstance(a, str) for a in address):
        addresses = list(address)
    else:
        raise TypeError(
            "address must be a str (a socket path, host:port or dns:host:port) or a non-empty list "
            f"of them, not {address!r}"
        )
    names: list[Name] = []
    plain: list[str] = []
    for one in addresses:
        name = dns_name(one)
        if name is None:
            plain.append(one)
        else:
            names.append(name)
    parsed = [check_address(a) for a in plain]
    remote = RemoteSettings(
        secret=secret,
        ssl_context=ssl_context,
        server_hostname=server_hostname,
        connect_timeout=connect_timeout,
        resolve_interval=resolve_interval,
        idempotent=idempotent,
    )
    if ssl_context is not None:
        for one, kind in zip(plain, parsed, strict=True):
            if kind.kind != "tcp":
                raise ValueError(
                    f"ssl_context needs a TCP address (host:port), and {one!r} is a Unix socket path: "
                    "a sidecar speaks TLS only over TCP"
                )
    speaks = dialect(protocol)
    settings = _pool_settings(
        speaks, pool_size, max_frame_size, max_inflight, max_host_calls, keepalive_timeout
    )
    speaks.check(secret=secret, ssl_context=ssl_context, handlers=handlers, config=config)
    registry = Handlers(handlers)
    if config is not None:
        registry.provide_config(config)
    calls, hosts = _chains(speaks, interceptors, host_interceptors, tracing)
    registry.intercept(hosts)

    async with _background() as nursery:

        def pool_for(address: str, hostname: str | None = None) -> Pool:
            return Pool(
                nursery,
                speaks.connect(remote, settings.limits, address, hostname),
                settings,
                explain=lost_without_explanation,
                handlers=registry,
            )

        router: Pool | Endpoints
        if isinstance(address, str) and not names:
            router = pool = pool_for(address)
            pool.address = address
            await pool.warm_up()
        else:
            router = endpoints = Endpoints(
                plain,
                pool_for,
                names=names,
                resolve_interval=remote.resolve_interval,
                resolve_timeout=remote.connect_timeout,
                idempotent=remote.idempotent,
            )
            await endpoints.start()
            nursery.start_soon(endpoints.watch)
        try:
            yield GoTask(router, registry, calls)
        finally:
            router.close()


def _chains(
    speaks: Dialect, interceptors: object, host_interceptors: object, tracing: bool | None
) -> tuple[tuple[Interceptor, ...], tuple[HostInterceptor, ...]]:
    """The interceptors of calls and of host calls, checked, with tracing's first in each when
    ``tracing`` is on (`tracing_interceptors`)."""
    calls: tuple[Interceptor, ...] = check_interceptors(interceptors, "interceptors")
    hosts: tuple[HostInterceptor, ...] = check_interceptors(host_interceptors, "host_interceptors")
    speaks.check(host_interceptors=hosts or None)
    traced, traced_host = tracing_interceptors(tracing, inject=speaks.carries_metadata)
    if traced is not None:
        calls = (traced, *calls)
    if traced_host is not None:
        hosts = (traced_host, *hosts)
    return calls, hosts


def _pool_settings(
    speaks: Dialect,
    pool_size: int | None,
    max_frame_size: int,
    max_inflight: int | None,
    max_host_calls: int,
    keepalive_timeout: float | None,
) -> PoolSettings:
    """The pool's settings, checked; ``None`` for the dialect's default."""
    limits = Limits(
        max_frame_size=max_frame_size,
        max_inflight=speaks.max_inflight if max_inflight is None else max_inflight,
        max_host_calls=max_host_calls,
    )
    return PoolSettings(
        pool_size=speaks.pool_size if pool_size is None else pool_size,
        limits=limits,
        keepalive_timeout=keepalive_timeout,
    )


async def _resolve_command(sidecar: SidecarSpec | None) -> list[str]:
    if sidecar is None:
        sidecar = os.environ.get(SIDECAR_ENV)
        if not sidecar:
            raise SidecarError(
                "no sidecar named: pass open_gotask() an executable, a command list or a folder "
                f"holding a Go main package, or set the {SIDECAR_ENV} environment variable to one"
            )
    if isinstance(sidecar, (str, os.PathLike)):
        if await trio.Path(sidecar).is_dir():
            return [str(await build_sidecar(sidecar))]
        return [os.fspath(sidecar)]
    command = [os.fspath(part) for part in sidecar]
    if not command:
        raise ValueError("the sidecar command list is empty")
    return command


@asynccontextmanager
async def _background() -> AsyncIterator[trio.Nursery]:
    """A nursery for internal tasks that hides them from the caller.

    The body's exception comes out unchanged, whatever it is (a group stays the same group);
    internal tasks never wrap it. Without one, a lone internal error comes out alone. (Each is
    raised outside any ``except`` block, so that no ``__context__`` is added to it.)
    """
    body: BaseException | None = None
    internal: BaseException | None = None
    try:
        async with trio.open_nursery() as nursery:
            try:
                yield nursery
            except BaseException as exc:
                body = exc  # raised below, once the internal tasks are done
            finally:
                nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        errors = exception_leaves(group)
        if body is None or any(isinstance(e, KeyboardInterrupt) for e in errors):
            if len(errors) != 1:
                raise
            internal = errors[0]
    if internal is not None:
        raise internal
    if body is not None:
        raise body


def exception_leaves(exc: BaseException) -> list[BaseException]:
    """The exceptions inside ``exc``, through nested exception groups, but `trio.Cancelled`;
    ``[exc]`` for an exception that is no group."""
    if not isinstance(exc, BaseExceptionGroup):
        return [exc]
    out: list[BaseException] = []
    for inner in exc.exceptions:
        out += [leaf for leaf in exception_leaves(inner) if not isinstance(leaf, trio.Cancelled)]
    return out
