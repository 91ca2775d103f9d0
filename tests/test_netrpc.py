"""Services written for net/rpc work unchanged: the test services of Go's own net/rpc
(`src/net/rpc/server_test.go` of the toolchain that runs this test, read at test time), registered
as its `startServer` registers them, answer from Python what its `testRPC` expects. Plus a service
shaped like a user's, with helper methods net/rpc would ignore."""

from __future__ import annotations

import logging
import re
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio
from gomodule import write_module

from trio_gotask import BadParams, GoTask, MethodNotFound, PanicError, RemoteError, build_sidecar, open_gotask
from trio_gotask._address import Transport

pytestmark = pytest.mark.slow  # Go builds of users' net/rpc services: the newest Python only

# The declarations of server_test.go that testRPC's services need.
SERVICE_TYPES = {"Args", "Reply", "Arith", "hidden", "Embed", "BuiltinTypes"}

NETRPC_MAIN = """
func main() {
	// As net/rpc's startServer (and startNewServer) register them.
	for _, err := range []error{
		gotask.Register(new(Arith)),
		gotask.Register(new(Embed)),
		gotask.RegisterName("net.rpc.Arith", new(Arith)),
		gotask.Register(BuiltinTypes{}),
		gotask.RegisterName("newServer.Arith", new(Arith)),
	} {
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	}
	gotask.Run()
}
"""


def net_rpc_declarations() -> str:
    """The type and method declarations of SERVICE_TYPES, cut out of the toolchain's gofmt'ed
    server_test.go: a top-level declaration starts at column 0 and, if it opens a brace, ends at
    the first line that is a lone closing brace."""
    goroot = subprocess.run(["go", "env", "GOROOT"], capture_output=True, text=True, check=True).stdout
    source = (Path(goroot.strip()) / "src" / "net" / "rpc" / "server_test.go").read_text()
    lines = source.splitlines()
    kept = []
    i = 0
    while i < len(lines):
        end = i
        if lines[i].startswith(("type ", "func ")) and lines[i].endswith("{"):
            while lines[end] != "}":
                end += 1
        declaration = "\n".join(lines[i : end + 1])
        i = end + 1
        named = re.match(r"type (\w+)", declaration) or re.match(r"func \((?:\w+ )?\*?(\w+)\)", declaration)
        if named and named[1] in SERVICE_TYPES:
            kept.append(declaration)
    found = {m[1] for d in kept if (m := re.match(r"type (\w+)", d))}
    assert found == SERVICE_TYPES, f"server_test.go changed: found {found}"
    return "\n\n".join(kept)


def net_rpc_sidecar_source() -> str:
    declarations = net_rpc_declarations()
    imports = ["fmt", "os", *(p for p in ("errors", "time") if f"{p}." in declarations)]
    return (
        "package main\n\nimport (\n"
        + "".join(f'\t"{p}"\n' for p in sorted(imports))
        + '\n\t"github.com/trio-gotask/trio-gotask/go/gotask"\n)\n\n'
        + declarations
        + "\n"
        + NETRPC_MAIN
    )


@pytest.fixture(scope="module")
def netrpc_sidecar(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = write_module(tmp_path_factory.mktemp("netrpc") / "netrpc", {"main.go": net_rpc_sidecar_source()})
    return trio.run(build_sidecar, folder)


@pytest.fixture(params=["unix", "tcp", "pipe"])
async def netrpc(request: pytest.FixtureRequest, netrpc_sidecar: Path) -> AsyncIterator[GoTask]:
    transport: Transport = request.param
    async with open_gotask(netrpc_sidecar, transport=transport) as gt:
        yield gt


async def test_net_rpc_test_rpc_expectations(netrpc: GoTask) -> None:
    gt = netrpc
    # Synchronous calls
    assert await gt.call("Arith.Add", {"A": 7, "B": 8}) == {"C": 15}
    # Methods exported from unexported embedded structs
    assert await gt.call("Embed.Exported", {"A": 7, "B": 0}) == {"C": 7}
    # Nonexistent method
    with pytest.raises(MethodNotFound):
        await gt.call("Arith.BadOperation", {"A": 7, "B": 0})
    # Unknown service
    with pytest.raises(MethodNotFound, match="method"):
        await gt.call("Arith.Unknown", {"A": 7, "B": 8})
    # Out of order
    results: dict[str, object] = {}

    async def call(method: str) -> None:
        results[method] = await gt.call(method, {"A": 7, "B": 8})

    async with trio.open_nursery() as nursery:
        nursery.start_soon(call, "Arith.Mul")
        nursery.start_soon(call, "Arith.Add")
    assert results == {"Arith.Mul": {"C": 56}, "Arith.Add": {"C": 15}}
    # Error test
    with pytest.raises(RemoteError) as info:
        await gt.call("Arith.Div", {"A": 7, "B": 0})
    assert info.value.message == "divide by zero"
    # Bad type: a Reply where Args are expected
    with pytest.raises(BadParams, match="type"):
        await gt.call("Arith.Add", {"C": 0})
    # Non-struct argument
    assert await gt.call("Arith.Scan", "12345") == {"C": 12345}
    # Non-struct reply
    assert await gt.call("Arith.String", {"A": 27, "B": 35}) == "27+35=62"
    assert await gt.call("Arith.Mul", {"A": 7, "B": 8}) == {"C": 56}
    # ServiceName contain "." character
    assert await gt.call("net.rpc.Arith.Add", {"A": 7, "B": 8}) == {"C": 15}
    # testNewServerRPC
    assert await gt.call("newServer.Arith.Add", {"A": 7, "B": 8}) == {"C": 15}
    # A panicking method fails its call; the sidecar keeps serving.
    with pytest.raises(PanicError, match="ERROR"):
        await gt.call("Arith.Error", {"A": 1, "B": 2})
    assert await gt.call("Arith.Add", {"A": 1, "B": 2}) == {"C": 3}


async def test_net_rpc_builtin_types(netrpc: GoTask) -> None:
    # Map: the reply reaches the method allocated, so (*reply)[k] = v works.
    assert await gt_call(netrpc, "BuiltinTypes.Map") == {7: 8}
    assert await gt_call(netrpc, "BuiltinTypes.Slice") == [7, 8]
    assert await gt_call(netrpc, "BuiltinTypes.Array") == [7, 8]


async def gt_call(gt: GoTask, method: str) -> object:
    return await gt.call(method, {"A": 7, "B": 8})


# A service as users write them: RPC methods beside helpers of other shapes.
USER_SERVICE = """package main

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync"

	"github.com/trio-gotask/trio-gotask/go/gotask"
)

// DB is an in-memory store with the helpers a real one has.
type DB struct {
	mu   sync.Mutex
	rows map[string]string
}

func Open() *DB { return &DB{rows: map[string]string{}} }

type Put struct {
	Key, Value string
}

func (d *DB) Set(p Put, ok *bool) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.rows[p.Key] = p.Value
	*ok = true
	return nil
}

func (d *DB) Get(ctx context.Context, key string, value *string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	v, found := d.rows[key]
	if !found {
		return fmt.Errorf("no row %q", key)
	}
	*value = v
	return nil
}

func (d *DB) Keys(prefix string, keys *[]string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	for k := range d.rows {
		if strings.HasPrefix(k, prefix) {
			*keys = append(*keys, k)
		}
	}
	return nil
}

// Helpers net/rpc ignores: Close returns an error but takes no arguments.
func (d *DB) Close() error                   { return nil }
func (d *DB) Len() int                       { return len(d.rows) }
func (d *DB) String() string                 { return "DB" }
func (d *DB) Ping(ctx context.Context) error { return ctx.Err() }

func main() {
	db := Open()
	defer db.Close()
	if err := gotask.Register(db); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	gotask.Run()
}
"""


@pytest.mark.fault(
    fault="a service with helper methods of other shapes (Close() error, Ping(ctx) error)",
    sees="its RPC methods served; one log line per helper left out, with the reason",
)
async def test_a_users_service_with_helpers_is_published(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="trio_gotask.sidecar")
    folder = write_module(tmp_path / "db", {"main.go": USER_SERVICE})
    async with open_gotask(folder) as gt:
        assert await gt.call("DB.Set", {"Key": "a", "Value": "1"}) is True
        assert await gt.call("DB.Get", "a") == "1"
        assert await gt.call("DB.Keys", "zz") == []  # an empty slice, not None
        with pytest.raises(
            MethodNotFound, match=r"DB\.Close is not callable: Register skipped it, since it takes 0"
        ):
            await gt.call("DB.Close")
        with pytest.raises(MethodNotFound, match=r'did you mean "DB\.Get"\?'):
            await gt.call("DB.get")
    skipped = [r.getMessage() for r in caplog.records if "not published" in r.getMessage()]
    assert len(skipped) == 2, skipped  # Close and Ping return errors; Len and String do not
    assert any("DB.Close takes 0 parameters" in line for line in skipped)
    assert any("DB.Ping takes 1 parameters" in line for line in skipped)


BANNER_SIDECAR = """\
package main

import (
	"fmt"

	"github.com/trio-gotask/trio-gotask/go/gotask"
)

// A dependency that announces itself, as some do.
func init() { fmt.Println("acme-metrics v2.1 loaded") }

type App struct{}

func (App) Hi(name string, reply *string) error { *reply = "hi " + name; return nil }

func main() {
	fmt.Println("starting the sidecar")
	gotask.Register(new(App))
	gotask.Run()
}
"""


@pytest.mark.fault(
    fault="a sidecar that prints to stdout before gotask.Run (a banner, a dependency's init)",
    sees="it starts; each line is logged as a warning that says to print to stderr instead",
)
@pytest.mark.parametrize("transport", ["unix", "pipe"])
async def test_output_before_run_is_skipped_and_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, transport: Transport
) -> None:
    folder = write_module(tmp_path / "banner", {"main.go": BANNER_SIDECAR})
    async with open_gotask(folder, transport=transport) as gt:
        assert await gt.call("App.Hi", "there") == "hi there"
    warned = [r.getMessage() for r in caplog.records if "before its handshake line" in r.getMessage()]
    assert warned == [
        "banner printed to stdout before its handshake line (skipped; print to stderr instead): " + line
        for line in ("acme-metrics v2.1 loaded", "starting the sidecar")
    ]
