"""Build a Go main package into a per-user cache, keyed by everything that decides the binary."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Final

import trio

from ._errors import SidecarError

_GO_ENV_KEYS: Final = ("GOOS", "GOARCH", "CGO_ENABLED", "GOFLAGS", "GOEXPERIMENT", "GOAMD64", "GOTOOLCHAIN")
_SKIP_DIRS: Final = frozenset({".git", "testdata", "vendor", "node_modules", "__pycache__"})


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
    go = os.environ.get("GOTASK_GO") or shutil.which("go")
    if not go:
        raise SidecarError(
            "building a sidecar from Go sources needs the Go toolchain, and 'go' is not on PATH: "
            "install Go (https://go.dev/dl/), set GOTASK_GO to the go binary, or pass open_gotask() "
            "a built executable instead of a source directory"
        )
    return go


def _module_root(package: Path) -> Path:
    for folder in (package, *package.parents):
        if (folder / "go.mod").is_file():
            return folder
    raise SidecarError(
        f"{package} is not inside a Go module (no go.mod in it or above it): run 'go mod init' there"
    )


def build_key(package: Path, go: str) -> str:
    """A digest of the module's Go sources, go.mod/go.sum, the package path, the toolchain and the
    build environment: the same key means the same binary."""
    root = _module_root(package)
    digest = hashlib.sha256()
    go_real = Path(go).resolve()
    stat = go_real.stat()
    digest.update(f"go={go_real}:{stat.st_size}:{stat.st_mtime_ns}\n".encode())
    for key in _GO_ENV_KEYS:
        digest.update(f"{key}={os.environ.get(key, '')}\n".encode())
    digest.update(f"package={package.relative_to(root).as_posix()}\n".encode())
    files: list[Path] = []
    for folder, dirs, names in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in _SKIP_DIRS and not d.startswith((".", "_")))
        for name in names:
            if name in ("go.mod", "go.sum", "go.work") or (
                name.endswith(".go") and not name.endswith("_test.go")
            ):
                files.append(Path(folder) / name)
    for path in sorted(files):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()[:32]


async def build_sidecar(package: os.PathLike[str] | str) -> Path:
    """Return the path of the built binary for the Go main package in ``package``.

    It is built with ``go build`` on first use and again only when the key (`build_key`) changes.
    Raises `SidecarError` with the compiler's output if the build fails.
    """
    package = await trio.to_thread.run_sync(Path(package).resolve)
    go = find_go()
    key = await trio.to_thread.run_sync(build_key, package, go)
    target = cache_dir() / f"{package.name}-{key}" / package.name
    if await trio.Path(target).is_file():
        return target
    await trio.Path(target.parent).mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{package.name}.{os.getpid()}.partial")
    result = await trio.run_process(
        [go, "build", "-o", str(partial), "."],
        cwd=package,
        capture_stdout=True,
        capture_stderr=True,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    if result.returncode != 0:
        output = (result.stderr + result.stdout).decode("utf-8", "replace").strip()
        raise SidecarError(f"'go build' failed in {package} (exit status {result.returncode}):\n{output}")
    # A rename is atomic: another process building the same key at the same time is harmless.
    os.replace(partial, target)
    return target
