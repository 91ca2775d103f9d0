"""Build a Go main package into a per-user cache, and build it again whenever ``go build`` would.

What a build reads comes from Go itself: ``go env -json`` and ``go list -deps`` in the package's
folder name every package outside the module cache and GOROOT with all its files (Go, cgo, assembly,
embedded, excluded by build constraints), the go.mod and go.work files, the toolchain and the
settings. Their contents, digested, are the build's key. Reading them costs a ``go list``, so a
manifest records the stat of each input, of the folders holding them and of every place a go.mod or
go.work could appear; a start whose stats all match uses the recorded build and runs no Go at all.

Layout of `cache_dir`: one folder per package folder, ``<name>-<digest of its path>``, holding

- ``<key>/<name>``: a build (the `KEEP_BUILDS` most recently built or chosen are kept);
- ``env-<digest>.json``: for one environment (GO*, CGO_*, CC, PATH, ...), the key to use and the
  stats that must still hold;
- ``.tmp-*``: a survey or build in progress: go's GOTMPDIR and TMPDIR, the partial binary.
"""

from __future__ import annotations

import glob
import hashlib
import json
import logging
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import trio

from ._errors import SidecarError

logger = logging.getLogger("trio_gotask.build")

KEEP_BUILDS: Final = 3
"""Builds kept per package folder: the newest, the one before it (a process that chose it just
before the newer build landed may still be about to start it), and one more for an environment used
alternately (other build tags, another GOFLAGS)."""

_FORMAT: Final = 1  # of keys and manifests: change it when either changes meaning
_ATTEMPTS: Final = 3
# A build still running after NOTICE_AFTER seconds says so as a warning (visible with no logging
# set up), then again every PROGRESS_EVERY seconds, with the modules Go has downloaded.
NOTICE_AFTER: Final = 2.0
PROGRESS_EVERY: Final = 10.0
_DOWNLOADING: Final = re.compile(r"^go: downloading (\S+ \S+)$", re.MULTILINE)
_MAX_MANIFESTS: Final = 16
_STALE_WORK_NS: Final = 24 * 3600 * 10**9  # a .tmp-* folder this old was left by a killed process
# A file written within this margin before a survey could change again within the same tick of
# the filesystem's clock without changing its stat, so its stat is not trusted until it is older.
_MARGIN_NS: Final = 100_000_000
_MARGIN_WHOLE_SECONDS_NS: Final = 2_000_000_000  # for filesystems that keep whole seconds only

_LIST_FIELDS: Final = (
    "Dir,ImportPath,Name,Standard,DepOnly,Module,GoFiles,CgoFiles,CFiles,CXXFiles,MFiles,HFiles,"
    "FFiles,SFiles,SwigFiles,SwigCXXFiles,SysoFiles,EmbedPatterns,EmbedFiles,IgnoredGoFiles,"
    "IgnoredOtherFiles,InvalidGoFiles"
)
_FILE_FIELDS: Final = _LIST_FIELDS.split(",")[6:]
# `go env` settings that do not change the binary (where modules come from, where caches live), or
# that change on every run (GOGCCFLAGS names a fresh temporary folder).
_NOT_IN_KEY: Final = frozenset(
    {
        "GOAUTH",
        "GOBIN",
        "GOCACHE",
        "GOCACHEPROG",
        "GOENV",
        "GOGCCFLAGS",
        "GOINSECURE",
        "GONOPROXY",
        "GONOSUMDB",
        "GOPRIVATE",
        "GOPROXY",
        "GOSUMDB",
        "GOTELEMETRY",
        "GOTELEMETRYDIR",
        "GOTMPDIR",
        "GOVCS",
    }
)
# Besides GO* and CGO_*: what decides the go env file's place, the C compilers and pkg-config.
_ENVIRONMENT: Final = frozenset({"AR", "CC", "CXX", "FC", "GCCGO", "HOME", "PATH", "XDG_CONFIG_HOME"})
_KEY: Final = re.compile(r"[0-9a-f]{32}")

Stat = list[int]  # size, mtime_ns, ctime_ns, inode (a list, as JSON gives it back)


def cache_dir() -> Path:
    """Where built sidecars live: ``$GOTASK_CACHE_DIR``, else the user's cache folder."""
    if explicit := os.environ.get("GOTASK_CACHE_DIR"):
        return Path(explicit)
    if sys.platform == "darwin":
        base = Path.home() / "Library" / "Caches"
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "trio-gotask"


def find_go() -> str:
    """The go command: ``$GOTASK_GO``, else ``go`` on PATH, as an absolute path."""
    named = os.environ.get("GOTASK_GO")
    go = shutil.which(named or "go")
    if go is None and named:
        raise SidecarError(
            f"GOTASK_GO names {named!r}, which is not an executable: point it at the go binary"
        )
    if go is None:
        raise SidecarError(
            "building a sidecar from Go sources needs the Go toolchain, and 'go' is not on PATH: "
            "install Go (https://go.dev/dl/), set GOTASK_GO to the go binary, or pass open_gotask() "
            "a built executable instead of a source directory"
        )
    return os.path.realpath(go)


async def build_sidecar(package: os.PathLike[str] | str) -> Path:
    """Return the path of the built binary for the Go main package in the folder ``package``.

    The binary is built with ``go build`` on first use and again whenever an input of the build
    changes: a package outside the module cache and the standard library (with its cgo, assembly
    and embedded files), go.mod or go.work, the GO*/CGO_* settings, or the toolchain. A start with
    nothing changed compares file stats and runs no Go. The cache is ``$GOTASK_CACHE_DIR``, else
    ``trio-gotask`` in the user's cache folder (``~/.cache``, ``~/Library/Caches`` on macOS). The
    build logs a line when it starts and when it ends (logger ``trio_gotask.build``). Raises
    `SidecarError` with Go's output if the folder holds no main package or the build fails.
    Cancelled (or interrupted with Ctrl-C), it stops Go and leaves no partial file behind.
    """
    place, binary = await trio.to_thread.run_sync(_locate, os.fspath(package))
    if binary is not None:
        return binary
    return await _refresh(place)


@dataclass(frozen=True)
class _Place:
    package: Path
    go: str
    folder: Path  # this package folder's part of the cache
    manifest: Path  # this environment's manifest

    def binary(self, key: str) -> Path:
        return self.folder / key / self.package.name


@dataclass(frozen=True)
class _Survey:
    key: str
    inputs: list[tuple[str, Stat | None]]
    settled: bool  # every input is old enough for its stat to be trusted


def _locate(package: str) -> tuple[_Place, Path | None]:
    """Where this package's builds live, and the build to use if nothing changed since the manifest."""
    folder = Path(package).resolve()
    go = find_go()
    tag = hashlib.sha256(os.fsencode(folder)).hexdigest()[:16]
    home = cache_dir() / f"{folder.name}-{tag}"
    place = _Place(folder, go, home, home / f"env-{_fingerprint(go)}.json")
    return place, _unchanged_build(place)


def _fingerprint(go: str) -> str:
    """A digest of the go command and of the environment variables that can change a build."""
    digest = hashlib.sha256(f"{_FORMAT}\0{go}\n".encode())
    for name in sorted(os.environ):
        if (
            name.startswith(("GO", "CGO_", "PKG_CONFIG")) and not name.startswith("GOTASK_")
        ) or name in _ENVIRONMENT:
            digest.update(_text(name, os.environ[name]))
    return digest.hexdigest()[:16]


def _unchanged_build(place: _Place) -> Path | None:
    try:
        manifest = json.loads(place.manifest.read_bytes())
        if manifest["format"] != _FORMAT or not _KEY.fullmatch(manifest["key"]):
            return None
        for path, recorded in manifest["inputs"]:
            if _stat(path) != recorded:
                return None
        binary = place.binary(manifest["key"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return binary if binary.is_file() else None


def _stat(path: str) -> Stat | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]


class _Progress:
    """Tells a user waiting on a slow build what it is doing: after `NOTICE_AFTER` seconds, and
    every `PROGRESS_EVERY` seconds after that, a warning with the time so far, the step (``go
    list`` fetches the modules a first build needs, ``go build`` compiles) and the modules
    downloaded so far; and, if it said anything, a last line when the build is done."""

    def __init__(self, package: Path) -> None:
        self.package = package
        self.started = trio.current_time()
        self.reports = 0
        self.downloaded: dict[str, None] = {}

    def next_report(self) -> float:
        return self.started + NOTICE_AFTER + self.reports * PROGRESS_EVERY

    def report(self, step: str, output: Path) -> None:
        with suppress(OSError):
            self.downloaded.update(dict.fromkeys(_DOWNLOADING.findall(_read_text(output))))
        elapsed = trio.current_time() - self.started
        doing = {"list": "finding its modules", "build": "compiling"}.get(step, step)
        fetched = ""
        if self.downloaded:
            fetched = f", {len(self.downloaded)} module(s) downloaded so far (the last: {list(self.downloaded)[-1]})"
        advice = (
            "; a first build fetches the modules it needs through the Go module proxy, later "
            "builds come from the cache"
            if self.reports == 0
            else ""
        )
        logger.warning(
            "building the sidecar in %s: %.0f s so far, %s%s%s", self.package, elapsed, doing, fetched, advice
        )
        self.reports += 1

    def done(self) -> None:
        if self.reports:
            logger.warning(
                "built the sidecar in %s in %.0f s", self.package, trio.current_time() - self.started
            )


@trio.lowlevel.enable_ki_protection  # Ctrl-C lands at an await, where the cleanup below is armed
async def _refresh(place: _Place) -> Path:
    place.folder.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".tmp-", dir=place.folder))
    progress = _Progress(place.package)
    try:
        survey = await _survey(place, work, progress)
        for _ in range(_ATTEMPTS):
            binary = await trio.to_thread.run_sync(_reuse, place, work, survey)
            if binary is not None:
                return binary
            built = await _go_build(place, work, progress)
            after = await _survey(place, work, progress)
            if after.key == survey.key:
                installed = await trio.to_thread.run_sync(_install, place, work, built, after)
                progress.done()
                return installed
            # An input changed while go build read them: the binary may hold either version.
            logger.info("the sources of %s changed during the build; building again", place.package)
            survey = after
        raise SidecarError(
            f"the Go sources of {place.package} changed during each of {_ATTEMPTS} builds: "
            "start it again once they stay unchanged"
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


async def _survey(place: _Place, work: Path, progress: _Progress | None = None) -> _Survey:
    started = time.time_ns()
    goenv = await _go(place, work, "env", "-json")
    listing = await _go(place, work, "list", "-e", "-deps", f"-json={_LIST_FIELDS}", ".", progress=progress)
    return await trio.to_thread.run_sync(_digest, place, goenv, listing, started)


async def _go(place: _Place, work: Path, *args: str, progress: _Progress | None = None) -> bytes:
    """Run ``go args...`` in the package folder and return its stdout."""
    out, err = work / f"{args[0]}.out", work / f"{args[0]}.err"
    returncode = await _run([place.go, *args], place, work, stdout=out, stderr=err, progress=progress)
    if returncode != 0:
        raise SidecarError(
            f"'go {args[0]}' failed in {place.package} (exit status {returncode}):\n{_read_text(err)}"
        )
    return out.read_bytes()


async def _go_build(place: _Place, work: Path, progress: _Progress | None = None) -> Path:
    built = work / "out" / place.package.name
    output = work / "build.out"
    logger.info("go build %s: starting (a first build can take a minute)", place.package)
    started = time.monotonic()
    returncode = await _run(
        [place.go, "build", "-o", str(built), "."],
        place,
        work,
        stdout=output,
        stderr=output,
        progress=progress,
    )
    elapsed = time.monotonic() - started
    if returncode != 0:
        logger.info("go build %s: failed after %.1f s", place.package, elapsed)
        raise SidecarError(
            f"'go build' failed in {place.package} (exit status {returncode}):\n{_read_text(output)}"
        )
    logger.info("go build %s: done in %.1f s", place.package, elapsed)
    return built


async def _run(
    command: list[str],
    place: _Place,
    work: Path,
    *,
    stdout: Path,
    stderr: Path,
    progress: _Progress | None = None,
) -> int:
    """Run a go command with its output in files (no pipes, so no reader tasks and no nursery).

    Go and the compilers it starts get a session of their own and our work folder as their
    temporary folder: when we are cancelled or interrupted, they are all killed at once and what
    they wrote goes with the work folder. A slow command tells ``progress`` how it goes, from its
    stderr.
    """
    env = {**os.environ, "PWD": str(place.package), "GOTMPDIR": str(work), "TMPDIR": str(work)}
    fds: list[int] = []
    try:
        for path in dict.fromkeys((stdout, stderr)):
            fds.append(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600))
        process = await trio.lowlevel.open_process(
            command,
            cwd=place.package,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=fds[0],
            stderr=fds[-1],
            start_new_session=True,
        )
    finally:
        for fd in fds:
            os.close(fd)
    try:
        while progress is not None:
            with trio.move_on_at(progress.next_report()):
                return await process.wait()
            progress.report(command[1], stderr)
        return await process.wait()
    finally:
        if process.returncode is None:
            with suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            with trio.CancelScope(shield=True):
                await process.wait()


def _read_text(path: Path) -> str:
    return path.read_bytes().decode("utf-8", "replace").strip()


def _digest(place: _Place, goenv_json: bytes, listing: bytes, started: int) -> _Survey:
    """The key of the build described by ``go env`` and ``go list``, and the inputs to watch."""
    goenv: dict[str, str] = json.loads(goenv_json)
    packages = list(_json_values(listing))
    root = next((p for p in packages if not p.get("DepOnly")), {})
    if (name := root.get("Name")) and name != "main":  # no name: go build explains
        raise SidecarError(
            f"{place.package} holds the Go package {name!r}, which is not a main package: "
            "a sidecar is built from a folder of 'package main' files whose main() calls gotask.Run()"
        )
    modcache, goroot = goenv.get("GOMODCACHE", ""), goenv.get("GOROOT", "")

    files: set[str] = set()  # their contents go into the key
    folders: set[str] = set()  # only their stat is watched: an added file changes it
    cgo = False
    for package in packages:
        cgo = cgo or bool(package.get("CgoFiles"))
        folder = package.get("Dir")
        if not folder or package.get("Standard") or _inside(folder, modcache) or _inside(folder, goroot):
            continue  # immutable for a given version
        folders.add(folder)
        for field in _FILE_FIELDS:
            for name in package.get(field) or ():
                path = os.path.join(folder, name)
                files.add(path)
                folders.update(_folders_between(folder, path))  # embedded files can sit below
        for pattern in package.get("EmbedPatterns") or ():
            folders.update(_embed_folders(folder, pattern))
        module = package.get("Module") or {}
        for mod in (module, module.get("Replace") or {}):
            if (gomod := mod.get("GoMod")) and not _inside(gomod, modcache):
                files.add(gomod)  # not go.sum: checksums decide whether a build succeeds, not what it makes
            if mod.get("Main") and mod.get("Dir"):
                files.add(os.path.join(mod["Dir"], "vendor", "modules.txt"))
    if (gowork := goenv.get("GOWORK", "")) not in ("", "off"):
        files.update((gowork, os.path.join(os.path.dirname(gowork), "vendor", "modules.txt")))
    # Where a go.work or go.mod could appear and change what the build uses.
    for name in ("go.work", "go.mod"):
        for folder in (place.package, *place.package.parents):
            files.add(str(folder / name))
            if (folder / name).is_file():
                break
    tools = {place.go, os.path.join(goroot, "bin", "go")}
    if cgo and goenv.get("CGO_ENABLED") == "1":
        tools.update(_compiler(goenv.get(name, "")) for name in ("CC", "CXX"))
    # The go env file (GOENV may be "off") and the toolchain's own settings; their values are in
    # go env's report, and a change to them must be noticed without running go.
    settings = {os.path.join(goroot, "VERSION"), os.path.join(goroot, "go.env"), goenv.get("GOENV", "")}

    digest = hashlib.sha256(_text("format", str(_FORMAT)))
    digest.update(_text("package", str(place.package), root.get("ImportPath", "")))
    for name, value in sorted(goenv.items()):
        if name not in _NOT_IN_KEY:
            digest.update(_text("env", name, str(value)))
    for name in sorted(os.environ):
        if name.startswith(("CGO_", "PKG_CONFIG")):  # not all of them are in go env's report
            digest.update(_text("environ", name, os.environ[name]))
    inputs: dict[str, Stat | None] = {}
    for path in sorted(filter(os.path.isabs, tools)):
        inputs[path] = stat = _stat(path)
        digest.update(_text("tool", path, repr(stat and stat[:2])))  # size and mtime
    for path in sorted(files):
        inputs[path] = stat = _stat(path)  # before reading: a later change must show in the stat
        digest.update(_text("file", path, _content(path) if stat else "absent"))
    for path in folders | set(filter(os.path.isabs, settings)):
        inputs[path] = _stat(path)
    settled = all(_settled(stat, started) for stat in inputs.values())
    return _Survey(digest.hexdigest()[:32], sorted(inputs.items()), settled)


def _json_values(data: bytes) -> Iterator[dict[str, Any]]:
    """The JSON objects of ``go list -json``, written one after another."""
    text, decoder, at = data.decode("utf-8", "surrogateescape"), json.JSONDecoder(), 0
    while (at := len(text) - len(text[at:].lstrip())) < len(text):
        value, at = decoder.raw_decode(text, at)
        yield value


def _inside(path: str, folder: str) -> bool:
    return bool(folder) and (path == folder or path.startswith(folder.rstrip(os.sep) + os.sep))


def _folders_between(top: str, path: str) -> Iterator[str]:
    folder = os.path.dirname(path)
    while len(folder) > len(top) and _inside(folder, top):
        yield folder
        folder = os.path.dirname(folder)


def _embed_folders(package_dir: str, pattern: str) -> set[str]:
    """Folders whose listing decides what a ``//go:embed`` pattern matches."""
    full = os.path.join(package_dir, pattern.removeprefix("all:"))
    found = {folder for folder in glob.glob(os.path.dirname(full)) if os.path.isdir(folder)}
    for match in glob.glob(full):
        if os.path.isdir(match):
            found.update(folder for folder, _, _ in os.walk(match))
    return found


def _compiler(command: str) -> str:
    """The file a C compiler setting (``gcc``, ``clang -m32``) runs, or "" if none is found."""
    words = shlex.split(command)
    found = shutil.which(words[0]) if words else None
    return os.path.realpath(found) if found else ""


def _content(path: str) -> str:
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as file:
            while chunk := file.read(1 << 20):
                digest.update(chunk)
    except OSError as error:
        return f"unreadable: {error.strerror}"
    return digest.hexdigest()


def _settled(stat: Stat | None, started: int) -> bool:
    """Whether a change after ``started`` is sure to show in this stat.

    A write stamps mtime and ctime with the filesystem's clock, which moves in ticks; a stat older
    than a tick before the survey started cannot be stamped again unchanged.
    """
    if stat is None:
        return True  # absent: its appearance will show
    _, mtime, ctime, _ = stat
    whole_seconds = mtime % 10**9 == 0 and ctime % 10**9 == 0
    return min(mtime, ctime) < started - (_MARGIN_WHOLE_SECONDS_NS if whole_seconds else _MARGIN_NS)


def _text(*parts: str) -> bytes:
    return "\0".join(parts).encode("utf-8", "surrogateescape") + b"\n"


def _reuse(place: _Place, work: Path, survey: _Survey) -> Path | None:
    """The build for this key, if one exists (an edit undone, another environment, another process)."""
    binary = place.binary(survey.key)
    if not binary.is_file():
        return None
    os.utime(binary.parent)  # recently chosen: kept by the pruning
    _write_manifest(place, work, survey)
    return binary


def _install(place: _Place, work: Path, built: Path, survey: _Survey) -> Path:
    binary = place.binary(survey.key)
    binary.parent.mkdir(exist_ok=True)
    os.replace(built, binary)  # atomic: a process building the same key at once is harmless
    _write_manifest(place, work, survey)
    _prune(place.folder)
    return binary


def _write_manifest(place: _Place, work: Path, survey: _Survey) -> None:
    if not survey.settled:
        return  # the next start surveys again, when the recent changes are old enough to trust
    partial = work / "manifest.json"
    partial.write_text(json.dumps({"format": _FORMAT, "key": survey.key, "inputs": survey.inputs}))
    os.replace(partial, place.manifest)


def _prune(folder: Path) -> None:
    """Keep the `KEEP_BUILDS` builds most recently built or chosen, the manifests that name them,
    and the work folders of builds that may still be running."""
    builds, manifests = [], []
    now = time.time_ns()
    for entry in os.scandir(folder):
        mtime = entry.stat(follow_symlinks=False).st_mtime_ns
        if entry.is_dir(follow_symlinks=False) and _KEY.fullmatch(entry.name):
            builds.append((mtime, entry.name))
        elif entry.name.startswith("env-") and entry.name.endswith(".json"):
            manifests.append((mtime, entry.path))
        elif entry.name.startswith(".tmp-") and now - mtime > _STALE_WORK_NS:
            shutil.rmtree(entry.path, ignore_errors=True)
    builds.sort(reverse=True)
    kept = {name for _, name in builds[:KEEP_BUILDS]}
    for _, name in builds[KEEP_BUILDS:]:
        shutil.rmtree(folder / name, ignore_errors=True)
    manifests.sort(reverse=True)
    for rank, (_, path) in enumerate(manifests):
        try:
            key = json.loads(Path(path).read_bytes())["key"]
        except (OSError, ValueError, KeyError, TypeError):
            key = None
        if rank >= _MAX_MANIFESTS or key not in kept:
            with suppress(OSError):
                os.unlink(path)
