"""The examples run as a user runs them, against sidecars built from their own folders."""

from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
from timing import HANG

from trio_gotask._build import build_sidecar

pytestmark = pytest.mark.slow  # the examples, each with its own sidecar built: the newest Python only

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def run_example(
    path: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(path), *args],
        capture_output=True,
        text=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
        env=None if env is None else {**os.environ, **env},
    )


def missing(what: str) -> None:
    """Fail in CI, where everything the examples need is installed (.ci/run); skip elsewhere."""
    if os.environ.get("CI"):
        pytest.fail(f"{what} is missing: .ci/run installs it")
    pytest.skip(f"{what} is not installed")


def test_host_calls_example() -> None:
    done = run_example(EXAMPLES / "host_calls" / "orders.py")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "total: 2.50 EUR",
        "refused: Orders.Total: Prices.Lookup: KeyError: 'durian'",
    ]
    for item, price in (("apple", 0.5), ("pear", 0.75), ("fig", 1.25)):
        assert f"trio_gotask.go.orders INFO: priced item='{item}' price={price} currency='EUR'" in done.stderr


@pytest.fixture
def postgres() -> Iterator[str]:
    """A PostgreSQL server of its own in a temporary folder, on a Unix socket only; yields its URL."""
    found = [shutil.which("pg_ctl"), *sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))]
    pg_ctl = next((path for path in found if path), None)
    if pg_ctl is None:
        missing("PostgreSQL (Debian's postgresql package)")
    assert pg_ctl is not None
    bin_dir = Path(pg_ctl).parent
    # initdb refuses to run as root: the server then runs as the postgres user.
    user = "postgres" if os.geteuid() == 0 else None
    folder = Path(tempfile.mkdtemp(prefix="gotask-pg-"))
    if user is not None:
        shutil.chown(folder, user)
    data = folder / "data"

    def run(*command: str) -> None:
        done = subprocess.run(command, user=user, cwd=folder, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, f"{' '.join(command)} failed:\n{done.stdout}{done.stderr}"

    try:
        run(str(bin_dir / "initdb"), "-D", str(data), "-U", "gotask", "--auth=trust", "--no-sync")
        options = f"-c listen_addresses='' -c unix_socket_directories={folder} -c fsync=off"
        # -w returns once the server accepts connections.
        run(pg_ctl, "-D", str(data), "-o", options, "-l", str(folder / "server.log"), "-w", "start")
        try:
            yield f"host={folder} user=gotask dbname=postgres"
        finally:
            run(pg_ctl, "-D", str(data), "-m", "fast", "-w", "stop")
    finally:
        shutil.rmtree(folder)


def test_postgres_example(postgres: str) -> None:
    done = run_example(EXAMPLES / "postgres" / "events.py", env={"DATABASE_URL": postgres})
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "loaded 100000 events with COPY"
    assert re.fullmatch(r"50 queries at once in \d+\.\d\d s; the latest event of user 7:", lines[1])
    assert re.fullmatch(
        r"  #\d+ (login|view|search|purchase|logout) at \d{4}-\d\d-\d\d \d\d:\d\d UTC", lines[2]
    )
    # The report's timeout starts once PostgreSQL shows the query running, so the cancel request
    # finds it there; the script then waits until the server no longer runs it.
    assert lines[3] == "the report was cancelled by its 0.5 s timeout, and PostgreSQL stopped it"
    # The ticker's 10 ms sleep, begun before the report, ends before the report's deadline: Trio
    # wakes the ticker no later than it cancels the report, so it ticks at least once.
    ticks = re.fullmatch(r"the ticker ticked (\d+) times meanwhile: the Trio loop never blocked", lines[4])
    assert ticks is not None and int(ticks[1]) > 0
    # The Go context's cancellation reached the driver, which had the server stop the query.
    assert (
        "DB.Report: PostgreSQL stopped the query: ERROR: canceling statement due to user request (SQLSTATE 57014)"
        in done.stderr
    )


@pytest.fixture
def mongodb(tmp_path: Path) -> Iterator[str]:
    """A MongoDB-wire server of its own: FerretDB with its SQLite backend in a temporary folder,
    built from examples/mongodb/ferretdb (through the build cache, like a sidecar); yields its URI.
    It stops when its standard input closes."""
    binary = trio.run(build_sidecar, EXAMPLES / "mongodb" / "ferretdb")
    server = subprocess.Popen(
        [binary, "-data", str(tmp_path / "data")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        uri = server.stdout.readline().strip()  # printed once it accepts connections
        assert uri.startswith("mongodb://"), server.communicate(timeout=HANG)[1]
        yield uri
    finally:
        server.communicate(timeout=HANG)  # closes its stdin, waits for it, reaps it
        assert server.returncode == 0


def test_mongodb_example(mongodb: str) -> None:
    done = run_example(EXAMPLES / "mongodb" / "shop.py", env={"MONGODB_URI": mongodb})
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "50 callers inserted 1000 orders and read each back by _id: 0 differences"
    assert lines[2] == "revenue by status: new 835.00 EUR, paid 4162.50 EUR, shipped 11655.00 EUR"
    assert lines[3] == "orders of 30 EUR or more to Lyon: 83"
    # 35 EUR each, the 238 largest orders (all shipped) make half of 16652.50 EUR.
    assert lines[4] == "half the revenue comes from the 238 largest of 1000 orders"
    assert lines[5] == "latest new order: #999, placed 2026-01-26 16:03 UTC"
    assert lines[6:] == [
        "waiting for #999 to ship was given up on: True",
        "and once shipped, a waiter sees it: #999 is shipped",
    ]
    # Leaving the stream cancelled Mongo.Find, which had sent what its window allowed beyond the
    # documents taken, and not the rest.
    stopped = re.search(r"Mongo\.Find: stopped after sending (\d+) documents: context canceled", done.stderr)
    assert stopped is not None, done.stderr
    assert 238 <= int(stopped[1]) < 1000
    # The timeout ended the Go method's context, which stopped asking: by the deadline the call
    # carried, or by the client's $cancel, whichever Go saw first.
    assert re.search(
        r"Mongo\.WaitFor: the caller gave up after \d+\.\d s: context (deadline exceeded|canceled)",
        done.stderr,
    )


def test_fuzzy_match_example() -> None:
    done = run_example(EXAMPLES / "fuzzy_match" / "fuzzy_match.py", "30")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "30 misspelt names against 896 customers (26,880 edit distances)"
    assert re.fullmatch(r"Python, \d+ processes \(trio_parallel\) +\d+\.\d{3} +1\.0x", lines[2])
    assert re.fullmatch(r"Go, goroutines \(trio_gotask\) +\d+\.\d{3} +\d+\.\dx", lines[3])
    assert lines[4] == "for example, 'oNah Kowalski' is 'Noah Kowalski' (edit distance 2)"
    # The numbers are the machine's; the matches must be the same.
    assert lines[5] == "the same matches: True"


def test_safe_regex_example() -> None:
    done = run_example(EXAMPLES / "safe_regex" / "safe_regex.py")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    # A safe pattern: Python's search of it has no timeout, so it always has an answer to compare.
    assert (
        lines[0]
        == r"/ERROR .* timeout after \d{4,} ms/ matches 1000 of 10000 lines; Python and Go agree: True"
    )
    assert lines[1] == r"/^(\w+\s?)*$/ on a word of N letters and a '!':"
    for size, row in zip((14, 18, 22), lines[3:6], strict=True):
        # A short word takes Python measurable time; whether it gave up depends on the machine.
        assert re.fullmatch(
            rf" +{size} +(\d+\.\d{{4}} s|gave up after 1\.0 s) +\d+\.\d{{4}} s  no match", row
        )
    # Backtracking over 10,000 letters would take longer than the universe's age: Python's worker is
    # killed, and Go answers at once.
    assert re.fullmatch(r" +10000 +gave up after 1\.0 s +\d+\.\d{4} s  no match", lines[6])
    assert (
        lines[7]
        == r"Go refuses a backreference: Grep.Search: error parsing regexp: invalid escape sequence: `\1`"
    )


def test_gzip_pipeline_example() -> None:
    done = run_example(EXAMPLES / "gzip_pipeline" / "gzip_pipeline.py")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert re.fullmatch(
        r"compressed 16\.\d MiB into \d+\.\d MiB in \d+\.\d\d s \(\d+ MiB/s\), streamed back in chunks of 64 KiB",
        lines[0],
    )
    # The chunks, written one after another as they arrived, decompress to the input.
    assert lines[1] == "gunzip gives the file back: True"
    # The second run leaves the stream once Go has compressed half the file, and Go had sent at
    # most its window ahead: it was midway when the cancellation reached it.
    assert lines[2:] == ["compressing again, cancelled halfway through: True", "files left: []"]
    stopped = re.search(r"Gzip\.Compress: stopped after (\d+) of (\d+) bytes: context canceled", done.stderr)
    assert stopped is not None, done.stderr
    assert int(stopped[2]) / 2 <= int(stopped[1]) < int(stopped[2])


def test_tracing_example() -> None:
    done = run_example(EXAMPLES / "tracing" / "tracing.py", "pipe")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "total: 1.25",
        "checkout (python, internal)",
        "  Shop.Checkout (python, client)",
        "    Shop.Checkout (go, server)",
        "      price apple (go, internal)",
        "        Prices.Lookup (go, client)",
        "          Prices.Lookup (python, server)",
        "            read apple (python, internal)",
        "      price pear (go, internal)",
        "        Prices.Lookup (go, client)",
        "          Prices.Lookup (python, server)",
        "            read pear (python, internal)",
        "spans: 11, traces: 1",
    ]
