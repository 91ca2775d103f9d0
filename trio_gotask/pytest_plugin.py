"""pytest fixtures that start your Go sidecar and hand each test a `GoTask` (docs/testing.md).

This module is a pytest plugin, loaded through the package's ``pytest11`` entry point in every
pytest run of an environment where trio-gotask is installed. Loading it imports the package and
registers two command-line options, one ini setting and the `gotask` fixture: nothing starts and
nothing is built until a test asks for a fixture. ``-p no:trio_gotask`` turns it off.

- `gotask` is a fixture for the sidecar named by the ini setting ``gotask_sidecar`` or the option
  ``--gotask-sidecar``, or for the one already running at ``--gotask-address``.
- `gotask_fixture` makes fixtures of your own in conftest.py: several sidecars, options of
  `open_gotask`, one process shared by the tests of a module or session, an address.

The fixtures are async: they run in the test's own ``trio.run``, which pytest-trio provides. A
test using them is a Trio test (``trio_mode = true``, or ``@pytest.mark.trio``).
"""

from __future__ import annotations

import contextlib
import importlib.util
import inspect
import os
import threading
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal, get_args

import pytest
import trio

from ._address import Transport
from ._build import build_sidecar
from ._client import GoTask, SidecarSpec, connect_gotask, exception_leaves, open_gotask
from ._dialect import SECRET_ENV, Native, NativeLauncher
from ._errors import ErrorFactory, GoTaskError, SidecarError, error_factory
from ._settings import LaunchSettings, Limits
from ._sidecar import Sidecar, describe_status

__all__ = ["ProcessScope", "gotask", "gotask_fixture"]

ProcessScope = Literal["function", "class", "module", "session"]
"""How long one sidecar process lives, as pytest's fixture scopes (a test outside a class is its own
"class"). The `GoTask` is always the test's."""

# What a shared process can be given: how to start it, and how each test connects to it.
_PROCESS_OPTIONS: Final = frozenset(
    {"args", "env", "transport", "startup_timeout", "shutdown_grace", "max_frame_size"}
)
_CONNECTION_OPTIONS: Final = frozenset(
    {
        "pool_size",
        "max_frame_size",
        "max_inflight",
        "handlers",
        "config",
        "max_host_calls",
        "keepalive_timeout",
    }
)


@dataclass(frozen=True, eq=False)  # compared by identity: each fixture has its own processes
class _Spec:
    sidecar: SidecarSpec | None
    address: str | Sequence[str] | None
    process_scope: ProcessScope
    options: dict[str, Any]
    from_command_line: bool = False
    """Made from ``--gotask-address``, with the secret taken from ``$GOTASK_SECRET``."""

    def describe(self) -> str:
        if self.address is not None:
            return f"the sidecar at {self.address!r}"
        return f"the sidecar {self.sidecar!r}"


# Per pytest run (not per process: pytester runs pytest again in the same process).
_BUILDS: Final = pytest.StashKey[dict[Path, "Path | SidecarError"]]()
_SHARED: Final = pytest.StashKey[dict[tuple[_Spec, str], "_SharedSidecar"]]()
_CONFIGURED: Final = pytest.StashKey[_Spec]()


def gotask_fixture(
    sidecar: SidecarSpec | None = None,
    *,
    address: str | Sequence[str] | None = None,
    process_scope: ProcessScope = "function",
    name: str | None = None,
    **options: Any,
) -> Any:
    """Make a fixture that yields a `~trio_gotask.GoTask` for ``sidecar`` (or ``address``); assign it in conftest.py::

        app = gotask_fixture("go/app")  # the fixture is named "app"

    ``sidecar`` is what `~trio_gotask.open_gotask` takes: a folder holding a Go main package, built once per
    pytest run (and cached across runs, see `~trio_gotask.build_sidecar`); an executable; or a command list. A
    relative path is taken from pytest's rootdir (the folder of pytest.ini or pyproject.toml),
    not from the current directory; to run a program found on PATH, give a command list.
    ``options`` are `~trio_gotask.open_gotask`'s keyword arguments (``transport``, ``args``, ``env``,
    ``handlers``, ``restart``...). The fixture's name is the variable it is assigned to, or ``name``.

    ``process_scope`` says how long one sidecar process lives. With ``"function"`` (the default)
    every test gets a process of its own, stopped and reaped when the test ends, whatever the test
    did to it. With ``"class"``, ``"module"`` or ``"session"``, one process serves every test of
    that scope that uses this fixture (a test outside a class is a class of its own, as for pytest's
    fixtures), and each test opens connections to it and closes them at its end: a `~trio_gotask.GoTask`
    belongs to the ``trio.run`` that opened it, and pytest-trio runs each test in a run of its own,
    so only the process can be shared. Such a process is started by the first test that needs it,
    and stopped and reaped when the scope ends; state kept in Go is shared by those tests; if it
    dies, the test it died in and the later tests of its scope fail, saying so. It takes the
    options that start a process (``args``, ``env``, ``transport`` "unix" or "tcp",
    ``startup_timeout``, ``shutdown_grace``) and those of each test's connections (``pool_size``,
    ``max_frame_size``, ``max_inflight``, ``handlers``, ``config``, ``max_host_calls``,
    ``keepalive_timeout``); not ``restart`` nor ``protocol``.

    ``address`` instead connects each test to a sidecar started elsewhere (by you, by a debugger),
    with `~trio_gotask.connect_gotask` and its keyword arguments as ``options`` (``secret``,
    ``ssl_context``...); the process is not the fixture's, so ``process_scope`` does not apply.

    Arguments that cannot work raise `TypeError` or `ValueError` here, when conftest.py is imported;
    a missing pytest-trio, which runs these async fixtures, raises `RuntimeError`.
    """
    if (sidecar is None) == (address is None):
        raise TypeError(
            "gotask_fixture() takes either a sidecar (a folder, executable or command) or an address"
        )
    if process_scope not in get_args(ProcessScope):
        raise ValueError(
            f"process_scope must be one of {', '.join(get_args(ProcessScope))}, not {process_scope!r}"
        )
    if address is not None:
        if process_scope != "function":
            raise ValueError(
                "gotask_fixture(address=...) connects to a sidecar it did not start: there is no "
                "process for process_scope to share; leave it out"
            )
        _check_options(connect_gotask, "connect_gotask", (address,), options)
    else:
        _check_options(open_gotask, "open_gotask", (sidecar,), options)
        if process_scope != "function":
            defaults = inspect.signature(open_gotask).parameters
            options = {name: defaults[name].default for name in _PROCESS_OPTIONS} | options
            _check_shared_options(process_scope, options)
    if importlib.util.find_spec("pytest_trio") is None:
        raise RuntimeError(
            "gotask_fixture() makes async fixtures, which run in each test's trio.run: install "
            "pytest-trio (pip install pytest-trio, or trio-gotask[pytest]) and set trio_mode = true"
        )
    spec = _Spec(sidecar, address, process_scope, dict(options))

    async def fixture(request: pytest.FixtureRequest) -> AsyncIterator[GoTask]:
        __tracebackhide__ = True
        async with _failing_briefly(spec, request) as gt:
            yield gt

    fixture.__doc__ = (
        f"A GoTask for {spec.describe()} (process_scope={process_scope!r}), made by gotask_fixture()."
    )
    if name is not None:
        fixture.__name__ = fixture.__qualname__ = name
        made = pytest.fixture(fixture, name=name)
    else:
        made = pytest.fixture(fixture)
    # pytest finds a fixture by the name it is assigned to in a module or a class: check that it
    # is, when made there (made in a function, it may be assigned anywhere).
    caller = inspect.currentframe()
    caller = caller.f_back if caller is not None else None
    if caller is not None:
        namespace = caller.f_locals
        if caller.f_code.co_name == "<module>" or {"__module__", "__qualname__"} <= namespace.keys():
            _MADE.append((made, namespace, Path(caller.f_code.co_filename), caller.f_lineno))
    return made


_MADE: Final[list[tuple[object, dict[str, Any], Path, int]]] = []
"""Each fixture `gotask_fixture` made in a module or a class body: the fixture, that namespace and
where, for `pytest_collection_finish` to check that it was assigned a name."""


def pytest_collection_finish(session: pytest.Session) -> None:
    root = session.config.rootpath
    unassigned = [
        f"{path}:{line}"
        for made, namespace, path, line in _MADE
        if path.is_relative_to(root) and not any(v is made for v in namespace.values())
    ]
    _MADE.clear()
    if unassigned:
        raise pytest.UsageError(
            f"gotask_fixture() at {', '.join(unassigned)} is not assigned to a name, so pytest defines "
            "no fixture from it: write `app = gotask_fixture(...)` at the top level of conftest.py "
            "(the fixture is then named app)"
        )


def _short_reason(exc: BaseException, spec: _Spec) -> str | None:
    """What a fixture's failure says without its traceback: the message of the trio-gotask error
    (or of each, from an exception group) with advice in pytest's terms; None for any other
    failure, whose traceback is worth reading."""
    leaves = exception_leaves(exc)
    if not leaves or not all(isinstance(e, GoTaskError) for e in leaves):
        return None
    reason = "; ".join(dict.fromkeys(str(e) for e in leaves))
    if spec.from_command_line and "secret" in reason:
        reason += (
            f"\n(--gotask-address takes the sidecar's secret from ${SECRET_ENV}: set it to the value "
            "the sidecar was started with)"
        )
    return reason


def _check_options(function: Any, name: str, args: tuple[object, ...], options: dict[str, Any]) -> None:
    try:
        inspect.signature(function).bind(*args, **options)
    except TypeError as exc:
        raise TypeError(f"gotask_fixture() passes its keyword arguments to {name}(): {exc}") from None


def _check_shared_options(scope: ProcessScope, options: dict[str, Any]) -> None:
    if extra := sorted(set(options) - _PROCESS_OPTIONS - _CONNECTION_OPTIONS):
        raise TypeError(
            f"with process_scope={scope!r}, gotask_fixture() cannot take {', '.join(extra)}: a "
            "process shared by several tests is started once and each test connects to it; "
            "use process_scope='function' for these"
        )
    transport = options["transport"]
    if transport not in ("unix", "tcp"):
        raise ValueError(
            f"with process_scope={scope!r}, transport must be 'unix' or 'tcp', not {transport!r}: "
            "each test opens its own connections, and a pipe is one connection that cannot be reopened"
        )
    LaunchSettings(  # checks the process options as open_gotask does
        command=options["args"],
        transport=transport,
        env=options.get("env") or {},
        startup_timeout=options["startup_timeout"],
        grace=options["shutdown_grace"],
    )
    Native().check_args(options["args"])


@pytest.fixture
async def gotask(request: pytest.FixtureRequest) -> AsyncIterator[GoTask]:
    """A `GoTask` for the sidecar this run is configured with, started for each test.

    The sidecar is the ``--gotask-sidecar`` option, else the ``gotask_sidecar`` ini setting (a
    path relative to the ini file), as `open_gotask` takes it (a Go package folder is built once per
    run). With ``--gotask-address``, each test connects to that running sidecar instead, with
    the secret in ``$GOTASK_SECRET`` if set. For anything else, make your own with `gotask_fixture`.
    """
    __tracebackhide__ = True
    async with _failing_briefly(_configured(request.config), request) as gt:
        yield gt


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("trio-gotask", "trio-gotask's gotask fixture (docs/testing.md)")
    group.addoption(
        "--gotask-sidecar",
        metavar="PATH",
        help="the sidecar of the gotask fixture: a Go main package folder or an executable "
        "(overrides the gotask_sidecar ini setting)",
    )
    group.addoption(
        "--gotask-address",
        metavar="ADDRESS",
        help="connect the gotask fixture to the sidecar already running at ADDRESS (a socket path "
        f"or host:port, with ${SECRET_ENV} as its secret) instead of starting one",
    )
    parser.addini(
        "gotask_sidecar",
        "the sidecar of the gotask fixture: a Go main package folder or an executable, relative "
        "to the ini file",
        type="paths",
    )


def _configured(config: pytest.Config) -> _Spec:
    if spec := config.stash.get(_CONFIGURED, None):
        return spec
    address: str | None = config.getoption("gotask_address")
    path: str | None = config.getoption("gotask_sidecar")
    paths: list[Path] = config.getini("gotask_sidecar")
    if address:
        spec = _Spec(
            None, address, "function", {"secret": os.environ.get(SECRET_ENV) or None}, from_command_line=True
        )
    elif path:
        spec = _Spec(config.invocation_params.dir / path, None, "function", {})
    elif len(paths) == 1:
        spec = _Spec(paths[0], None, "function", {})
    elif paths:
        pytest.fail(f"gotask_sidecar names one sidecar, not {len(paths)}: {paths}", pytrace=False)
    else:
        pytest.fail(
            "the gotask fixture needs a sidecar: set gotask_sidecar (the folder of its Go main "
            "package) in pytest's configuration, or pass --gotask-sidecar PATH or --gotask-address "
            "ADDRESS; or define your own fixture with trio_gotask.pytest_plugin.gotask_fixture()",
            pytrace=False,
        )
    config.stash[_CONFIGURED] = spec
    return spec


@asynccontextmanager
async def _failing_briefly(spec: _Spec, request: pytest.FixtureRequest) -> AsyncIterator[GoTask]:
    """`_open`, with a failure of the sidecar's (it did not start, could not be reached, died)
    reported as its message and no traceback: pytest's nested exception groups, full of the
    library's frames, would hide the reason."""
    __tracebackhide__ = True
    try:
        async with _open(spec, request) as gt:
            yield gt
    except BaseException as exc:
        reason = _short_reason(exc, spec)
        if reason is None:
            raise
        raise _SidecarFailed(f"fixture {request.fixturename!r}: {reason}", pytrace=False) from None


class _SidecarFailed(pytest.fail.Exception):  # type: ignore[name-defined,misc]
    """A fixture's failure that its message says all about (`pytest_runtest_makereport` shows
    only that, even from inside the exception groups of pytest-trio's nursery)."""


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if call.excinfo is not None and report.failed:
        leaves = exception_leaves(call.excinfo.value)
        if leaves and all(isinstance(leaf, _SidecarFailed) for leaf in leaves):
            report.longrepr = "\n".join(dict.fromkeys(f"Failed: {leaf}" for leaf in leaves))
    return report


@asynccontextmanager
async def _open(spec: _Spec, request: pytest.FixtureRequest) -> AsyncIterator[GoTask]:
    __tracebackhide__ = True
    if spec.address is not None:
        async with connect_gotask(spec.address, **spec.options) as gt:
            yield gt
        return
    assert spec.sidecar is not None
    command = await _command(spec.sidecar, request)
    if spec.process_scope == "function":
        async with open_gotask(command, **spec.options) as gt:
            yield gt
        return
    shared = await _shared(spec, command, request)
    options = {k: v for k, v in spec.options.items() if k in _CONNECTION_OPTIONS}
    async with connect_gotask(
        shared.address,
        secret=shared.secret,
        connect_timeout=spec.options["startup_timeout"],
        **options,
    ) as gt:
        yield gt
    await trio.to_thread.run_sync(shared.check)


async def _command(sidecar: SidecarSpec, request: pytest.FixtureRequest) -> SidecarSpec:
    """``sidecar`` with a relative path taken from the rootdir, and a Go package folder built (once
    per run: a failed build is not tried again for each test)."""
    if not isinstance(sidecar, (str, os.PathLike)):
        return sidecar
    path = request.config.rootpath / sidecar
    if not await trio.Path(path).is_dir():
        return path
    builds = request.config.stash.setdefault(_BUILDS, {})
    built = builds.get(path)
    if built is None:
        try:
            built = await build_sidecar(path)
        except SidecarError as exc:
            built = exc
        builds[path] = built
    if isinstance(built, SidecarError):
        pytest.fail(f"fixture {request.fixturename!r}: the sidecar did not build: {built}", pytrace=False)
    return built


async def _shared(spec: _Spec, command: SidecarSpec, request: pytest.FixtureRequest) -> _SharedSidecar:
    """The process of ``spec`` for the scope of this test: started on first use (a failed start
    is not tried again), stopped when the scope ends."""
    node = _scope_node(request, spec.process_scope)
    processes = request.config.stash.setdefault(_SHARED, {})
    shared = processes.get((spec, node.nodeid))
    if shared is None:
        options = spec.options
        shared = _SharedSidecar(
            [os.fspath(command)]
            if isinstance(command, (str, os.PathLike))
            else [os.fspath(c) for c in command],
            scope=spec.process_scope,
            args=options["args"],
            env=options["env"] or {},
            transport=options["transport"],
            startup_timeout=options["startup_timeout"],
            grace=options["shutdown_grace"],
            max_frame_size=options["max_frame_size"],
        )
        key = (spec, node.nodeid)
        processes[key] = shared

        def stop() -> None:
            del processes[key]
            shared.stop()

        node.addfinalizer(stop)
        await trio.to_thread.run_sync(shared.start)
    await trio.to_thread.run_sync(shared.check)
    return shared


def _scope_node(request: pytest.FixtureRequest, scope: ProcessScope) -> pytest.Item | pytest.Collector:
    """The node whose teardown ends ``scope`` for this test, as pytest picks it for fixtures."""
    item: pytest.Item = request.node
    if scope == "class":
        return item.getparent(pytest.Class) or item
    if scope == "module" and (module := item.getparent(pytest.Module)) is not None:
        return module
    return request.session


class _SharedSidecar:
    """A sidecar process that outlives the Trio runs of the tests it serves: a Trio run of its own,
    in a thread, starts it (as `open_gotask` does: launched, with a fresh secret), watches it, and
    stops it. Its methods block: call them from a thread that runs no Trio loop."""

    def __init__(
        self,
        command: list[str],
        *,
        scope: ProcessScope,
        args: Sequence[str],
        env: dict[str, str],
        transport: Transport,
        startup_timeout: float,
        grace: float,
        max_frame_size: int,
    ) -> None:
        # Launched as open_gotask launches: the same flags, environment and fresh secret.
        self._launcher = NativeLauncher(
            LaunchSettings(
                command=[*command, *args],
                transport=transport,
                env={**os.environ, **env},
                startup_timeout=startup_timeout,
                grace=grace,
            ),
            Limits(max_frame_size=max_frame_size, max_inflight=Native.max_inflight),
        )
        self._scope = scope
        self.secret = self._launcher.secret
        self.address = ""
        self._started = threading.Event()
        self._failure: ErrorFactory | None = None
        self._died: ErrorFactory | None = None
        # Set in the thread's run, before _started.
        self._sidecar: Sidecar | None = None
        self._recorded: trio.Event | None = None  # _died is set, or the run is ending
        self._cancel: trio.CancelScope | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._thread = threading.Thread(
            target=trio.run, args=(self._run,), name="trio-gotask shared sidecar", daemon=True
        )

    def start(self) -> None:
        """Start the process and wait for its handshake (then see `check`)."""
        self._thread.start()
        self._started.wait()

    def check(self) -> None:
        """Raise `SidecarError` if the process did not start, or has exited (on its own: not
        stopped by `stop`); again on each call, so that each test using it says why it fails."""
        if self._failure is None and self._died is None and self._token is not None:
            with contextlib.suppress(trio.RunFinishedError):
                trio.from_thread.run(self._notice_exit, trio_token=self._token)
        if self._failure is not None:
            raise self._failure()
        if self._died is not None:
            raise self._died()

    def stop(self) -> None:
        """Stop the process (stdin closed, then SIGTERM, then SIGKILL) and reap it."""
        if self._token is not None and self._cancel is not None:
            with contextlib.suppress(trio.RunFinishedError):  # it exited, and its run ended
                trio.from_thread.run_sync(self._cancel.cancel, trio_token=self._token)
        if self._thread.is_alive():
            self._thread.join()

    async def _notice_exit(self) -> None:
        """If the process has exited, wait until `_run` has recorded how: without this, a process
        that exited a moment ago could look alive to the next test."""
        assert self._sidecar is not None and self._recorded is not None
        process = self._sidecar.process
        if process is not None and process.poll() is not None:
            await self._recorded.wait()

    async def _run(self) -> None:
        sidecar = self._sidecar = self._launcher.new_sidecar()
        self._recorded = trio.Event()
        try:
            async with trio.open_nursery() as nursery:
                self._cancel = nursery.cancel_scope
                self._token = trio.lowlevel.current_trio_token()
                try:
                    handshake = await nursery.start(sidecar.run)
                except Exception as exc:
                    self._failure = error_factory(
                        SidecarError,
                        f"the sidecar shared by the tests of this {self._scope} did not start: {exc}",
                        cause=exc,
                    )
                    return
                self.address = handshake.address
                self._started.set()
                await sidecar.exited.wait()
                returncode = sidecar.process.returncode if sidecar.process else None
                self._died = error_factory(
                    SidecarError,
                    f"the sidecar {sidecar.name!r} shared by the tests of this {self._scope} "
                    f"(process_scope={self._scope!r}) exited with {describe_status(returncode)}; "
                    f"the later tests of this {self._scope} that use it fail too",
                    returncode=returncode,
                    stderr_tail=sidecar.stderr_tail,
                )
        finally:
            self._recorded.set()
            self._started.set()
