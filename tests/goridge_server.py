"""A sidecar shaped like one built with the GoTask library (github.com/hyperf/gotask/v2), built from
a temporary Go module that fetches real goridge through the Go module proxy: v2.4.4, the version
GoTask pins, or v2.4.6, the last v2 (`VERSIONS`; they differ in how a ``[]byte`` argument reads a
JSON body, docs/migrating-from-gotask.md).

GoTask's module is not served by the proxy here, so its server is mimicked, behaviour for
behaviour: net/rpc with ``rpc.ServeCodec(goridge.NewCodec(conn))`` on each accepted connection,
``goridge.NewCodecWithRelay(goridge.NewPipeRelay(os.Stdin, os.Stdout))`` with ``-listen-on-pipe``
(which also keeps the ``-address`` listener unless the address is empty); the process ends when
the pipe closes, on SIGINT, or when its parent disappears (polled every 500 ms) unless
``-standalone``; a stale Unix socket file is removed before listening; no handshake line; no
panic recovery. ``tests/test_goridge_interop.py`` also runs against GoTask's own code when
``GOTASK_SOURCE`` names a checkout of it.

Used by the interop tests and by ``benchmarks/bench.py``.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import trio

from trio_gotask import build_sidecar
from trio_gotask._build import cache_dir

HOLD = """// Calls of Hold wait until Release: a reply that comes when the test says, its caller gone.
var (
	held, released        = make(chan struct{}), make(chan struct{})
	holdOnce, releaseOnce sync.Once
)

func (a *App) Hold(_ any, r *string) error {
	holdOnce.Do(func() { close(held) })
	<-released
	*r = "late"
	return nil
}

// Holding returns once a call of Hold is waiting.
func (a *App) Holding(_ any, r *bool) error {
	<-held
	*r = true
	return nil
}

// Release lets the calls of Hold return, and those to come at once.
func (a *App) Release(_ any, r *bool) error {
	releaseOnce.Do(func() { close(released) })
	*r = true
	return nil
}

"""
"""App's Hold, Holding and Release, in both sidecars below (they import sync)."""

SERVER = (
    """package main

import (
	"errors"
	"flag"
	"log"
	"net"
	"net/rpc"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	goridge "github.com/spiral/goridge/v2"
)

type App struct{}

func (a *App) Hi(name string, r *map[string]string) error {
	*r = map[string]string{"hello": name}
	return nil
}

func (a *App) Echo(v any, r *any) error {
	*r = v
	return nil
}

func (a *App) Reverse(in []byte, out *[]byte) error {
	for i := len(in) - 1; i >= 0; i-- {
		*out = append(*out, in[i])
	}
	return nil
}

// Bytes returns n bytes, each n%256: Bytes(0) is an empty, non-nil []byte.
func (a *App) Bytes(n int, out *[]byte) error {
	*out = make([]byte, n)
	for i := range *out {
		(*out)[i] = byte(n)
	}
	return nil
}

func (a *App) Add(args struct {
	A int `json:"a"`
	B int `json:"b"`
}, r *int) error {
	*r = args.A + args.B
	return nil
}

func (a *App) Fail(msg string, r *string) error { return errors.New(msg) }

func (a *App) Sleep(ms int, r *int) error {
	time.Sleep(time.Duration(ms) * time.Millisecond)
	*r = ms
	return nil
}

func (a *App) Panic(msg string, r *string) error { panic(msg) }

"""
    + HOLD
    + """func (a *App) Pid(_ any, r *int) error {
	*r = os.Getpid()
	return nil
}

func main() {
	address := flag.String("address", "127.0.0.1:6001", "a unix socket path, or host:port")
	pipe := flag.Bool("listen-on-pipe", false, "serve on stdin and stdout")
	standalone := flag.Bool("standalone", false, "keep running when the parent process is gone")
	flag.Parse()
	if err := rpc.Register(new(App)); err != nil {
		log.Fatalln(err)
	}
	done := make(chan string, 3)
	if *pipe {
		go func() {
			rpc.ServeCodec(goridge.NewCodecWithRelay(goridge.NewPipeRelay(os.Stdin, os.Stdout)))
			done <- "pipe is closed"
		}()
	}
	if *address != "" {
		network := "tcp"
		if strings.Contains(*address, "/") {
			network = "unix"
			if _, err := os.Stat(*address); err == nil {
				os.Remove(*address)
			} else if err := os.MkdirAll(filepath.Dir(*address), 0o755); err != nil {
				log.Fatalln(err)
			}
			defer os.Remove(*address)
		}
		ln, err := net.Listen(network, *address)
		if err != nil {
			log.Fatalln("unable to listen:", err)
		}
		go func() {
			for {
				conn, err := ln.Accept()
				if err != nil {
					done <- err.Error()
					return
				}
				go rpc.ServeCodec(goridge.NewCodec(conn))
			}
		}()
	}
	signals := make(chan os.Signal, 1)
	signal.Notify(signals, os.Interrupt)
	parent := os.Getppid()
	tick := time.NewTicker(500 * time.Millisecond)
	for {
		select {
		case why := <-done:
			log.Println(why)
			return
		case sig := <-signals:
			log.Printf("received %v, shutting down", sig)
			return
		case <-tick.C:
			if !*standalone && syscall.Kill(parent, 0) != nil {
				return
			}
		}
	}
}
"""
)

VERSIONS = ("v2.4.4", "v2.4.6")
"""The goridge versions the server is built with: GoTask's pin, and the last of goridge v2."""

GO_MOD = """module example.com/goridgeserver

go 1.22

require (
	github.com/spiral/goridge/v2 {version}
	github.com/json-iterator/go v1.1.12
	github.com/modern-go/reflect2 v1.0.2
)
"""
"""With the json-iterator and reflect2 versions GoTask users need on Go 1.18 and later."""


class ProxyUnreachable(Exception):
    """The Go module proxy cannot be reached, so goridge cannot be fetched."""


def _unreachable(stderr: str) -> bool:
    lowered = stderr.lower()
    return "dial tcp" in lowered or ("proxy" in lowered and "connect" in lowered)


def build(folder: Path, version: str = "v2.4.6") -> Path:
    """Write the module into ``folder`` with goridge ``version`` (one of `VERSIONS`), fetch its
    requirements, build it; return the binary."""
    if version not in VERSIONS:
        raise ValueError(f"version must be one of {', '.join(VERSIONS)}, not {version!r}")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "main.go").write_text(SERVER)
    (folder / "go.mod").write_text(GO_MOD.format(version=version))
    return _tidy_and_build(folder)


def cached_build(version: str = "v2.4.6") -> Path:
    """`build`, cached across runs as the example sidecar is: the module goes (tidied) into a
    folder of the per-user cache named by a digest of its files, which `build_sidecar` builds
    once and then finds built, running no Go. Safe to call from several processes at once."""
    if version not in VERSIONS:
        raise ValueError(f"version must be one of {', '.join(VERSIONS)}, not {version!r}")
    go_mod = GO_MOD.format(version=version)
    digest = hashlib.sha256(f"{SERVER}\0{go_mod}".encode()).hexdigest()[:16]
    folder = cache_dir() / "goridge-server" / f"{version}-{digest}"
    if not folder.exists():
        folder.parent.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=".tmp-", dir=folder.parent))
        try:
            (work / "main.go").write_text(SERVER)
            (work / "go.mod").write_text(go_mod)
            _tidy(work)
            os.rename(work, folder)  # whole or not at all; another process may have won the race
        except OSError:
            if not folder.exists():
                raise
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return trio.run(build_sidecar, folder)


GOTASK_APP = (
    """package main

import (
	"errors"
	"log"
	"os"
	"sync"
	"time"

	"github.com/hyperf/gotask/v2/pkg/gotask"
)

type App struct{}

func (a *App) Hi(name any, r *any) error {
	*r = map[string]any{"hello": name}
	return nil
}

func (a *App) Reverse(in []byte, out *[]byte) error {
	for i := len(in) - 1; i >= 0; i-- {
		*out = append(*out, in[i])
	}
	return nil
}

func (a *App) Fail(msg string, r *string) error { return errors.New(msg) }

func (a *App) Sleep(ms int, r *int) error {
	time.Sleep(time.Duration(ms) * time.Millisecond)
	*r = ms
	return nil
}

func (a *App) Pid(_ any, r *int) error {
	*r = os.Getpid()
	return nil
}

"""
    + HOLD
    + """func main() {
	if err := gotask.Register(new(App)); err != nil {
		log.Fatalln(err)
	}
	if err := gotask.Run(); err != nil {
		log.Fatalln(err)
	}
}
"""
)


def build_with_gotask(folder: Path, gotask_source: Path) -> Path:
    """A user's sidecar built on GoTask's own library, from the checkout at ``gotask_source``
    (through a ``replace``, as the module proxy does not serve it), with the json-iterator and
    reflect2 versions GoTask users need on Go 1.18 and later."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "main.go").write_text(GOTASK_APP)
    (folder / "go.mod").write_text(
        "module example.com/gotaskuser\n\ngo 1.22\n\nrequire (\n"
        "\tgithub.com/hyperf/gotask/v2 v2.0.0\n"
        "\tgithub.com/json-iterator/go v1.1.12\n"
        "\tgithub.com/modern-go/reflect2 v1.0.2\n"
        f")\n\nreplace github.com/hyperf/gotask/v2 => {gotask_source.resolve()}\n"
    )
    return _tidy_and_build(folder)


def _tidy(folder: Path) -> None:
    tidy = subprocess.run(["go", "mod", "tidy"], cwd=folder, capture_output=True, text=True, timeout=300)
    if tidy.returncode != 0:
        if _unreachable(tidy.stderr):
            raise ProxyUnreachable(tidy.stderr)
        raise RuntimeError(f"go mod tidy failed in {folder}:\n{tidy.stderr}")


def _tidy_and_build(folder: Path) -> Path:
    _tidy(folder)
    binary = folder / "server"
    subprocess.run(["go", "build", "-o", str(binary), "."], cwd=folder, check=True, timeout=300)
    return binary
