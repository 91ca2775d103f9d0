"""Hostile clients against a standalone sidecar: what each attack costs it, before and after.

    python benchmarks/attack_sidecar.py                       # this tree's example sidecar
    python benchmarks/attack_sidecar.py --before main~3       # and the example as it was then
    python benchmarks/attack_sidecar.py --flags=-max-inflight=256,-max-frame-size=8388608

Each attack runs against a fresh ``go/example`` sidecar started by hand (``-standalone`` on
127.0.0.1) with its default limits, plus ``--flags``; the sidecar's peak resident memory is read
from ``/proc/PID/status`` (``VmHWM``). The attacks are those of issue 23:

- ``declared``: 40 connections each send a 4-byte header declaring a 64 MiB frame (or the
  sidecar's ``-max-frame-size``) and hold, while 8 callers echo 512 KiB calls.
- ``idle``: 5,000 connections that send nothing, against a sidecar whose descriptor limit is
  4,096; then, after its handshake timeout, whether a real client gets in.
- ``unread``: one connection sends 100 requests for 6.7 MiB replies (about 2,300 bytes) and never
  reads; then whether the sidecar closed it.
- ``guesses``: wrong secrets for 3 seconds, 8 at a time: how many, and the log they cost.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import struct
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import msgpack
import trio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from trio_gotask import GoTaskError, connect_gotask  # noqa: E402

SECRET = "the right secret"
MiB = 1 << 20


def build(rev: str | None, into: Path) -> Path:
    """The example sidecar of ``rev`` (this tree if None), built into ``into``."""
    src = ROOT / "go"
    if rev is not None:
        archive = subprocess.run(
            ["git", "-C", str(ROOT), "archive", rev, "go"], check=True, capture_output=True
        ).stdout
        subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
        src = into / "go"
    out = into / "sidecar"
    subprocess.run(["go", "build", "-o", str(out), "./example"], cwd=src, check=True)
    return out


class Sidecar:
    def __init__(
        self, binary: Path, flags: list[str], env: dict[str, str] | None = None, max_files: int | None = None
    ) -> None:
        def limit() -> None:
            if max_files is not None:
                resource.setrlimit(resource.RLIMIT_NOFILE, (max_files, max_files))

        self.log = tempfile.TemporaryFile()  # noqa: SIM115 (closed by stop)
        self.proc = subprocess.Popen(
            [str(binary), "-standalone", "-address", "127.0.0.1:0", *flags],
            stdout=subprocess.PIPE,
            stderr=self.log,
            env={**os.environ, **(env or {})},
            preexec_fn=limit,
        )
        assert self.proc.stdout is not None
        self.address = self.proc.stdout.readline().decode().strip().split("|")[3]

    def status(self, key: str) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
        raise KeyError(key)

    def fds(self) -> int:
        return len(os.listdir(f"/proc/{self.proc.pid}/fd"))

    def sockets(self) -> int:
        """Its open sockets: the listener and the connections."""
        folder = Path(f"/proc/{self.proc.pid}/fd")
        links = []
        for fd in folder.iterdir():
            with contextlib.suppress(FileNotFoundError):  # closed meanwhile
                links.append(os.readlink(fd))
        return sum(link.startswith("socket:") for link in links)

    def log_bytes(self) -> int:
        self.log.seek(0, os.SEEK_END)
        return self.log.tell()

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()
        assert self.proc.stdout is not None
        self.proc.stdout.close()
        self.log.close()


async def dial(address: str) -> trio.SocketStream:
    host, _, port = address.rpartition(":")
    return await trio.open_tcp_stream(host, int(port))


def frame(obj: Any) -> bytes:
    payload: bytes = msgpack.packb(obj)
    return struct.pack(">I", len(payload)) + payload


async def served(address: str, **kwargs: Any) -> bool:
    """Whether a real client gets an answer within 2 s."""
    with trio.move_on_after(2):
        try:
            async with connect_gotask(address, connect_timeout=2, **kwargs) as gt:
                return bool(await gt.call("App.Hi", "x") == {"hello": "x"})
        except GoTaskError:
            return False
    return False


async def declared(binary: Path, flags: list[str]) -> dict[str, str]:
    side = Sidecar(binary, flags)
    try:
        size = 64 * MiB
        for f in flags:
            if f.startswith("-max-frame-size="):
                size = int(f.split("=")[1])
        held = []
        for _ in range(40):
            s = await dial(side.address)
            await s.send_all(struct.pack(">I", size))
            held.append(s)
        payload = os.urandom(512 * 1024)
        calls = 0
        async with connect_gotask(side.address) as gt:

            async def caller() -> None:
                nonlocal calls
                for _ in range(50):
                    assert await gt.call("App.Bytes", payload) == payload[::-1]
                    calls += 1

            async with trio.open_nursery() as nursery:
                for _ in range(8):
                    nursery.start_soon(caller)
        peak = side.status("VmHWM")
        for s in held:
            await s.aclose()
        return {"peak RSS": f"{peak / MiB:.0f} MiB", "512 KiB calls": str(calls)}
    finally:
        side.stop()


async def idle(binary: Path, flags: list[str], wait: float) -> dict[str, str]:
    side = Sidecar(binary, flags, max_files=4096)
    try:
        held = []
        for _ in range(5000):
            held.append(await dial(side.address))
        during = await served(side.address)
        await trio.sleep(wait)
        fds, rss = side.fds(), side.status("VmRSS")
        after = await served(side.address)
        for s in held:
            await s.aclose()
        return {
            "descriptors after the wait": str(fds),
            "RSS after the wait": f"{rss / MiB:.0f} MiB",
            "real client served during / after": f"{'yes' if during else 'no'} / {'yes' if after else 'no'}",
        }
    finally:
        side.stop()


async def unread(binary: Path, flags: list[str], wait: float) -> dict[str, str]:
    side = Sidecar(binary, flags)
    try:
        s = await dial(side.address)
        requests = b"".join(frame([0, i, "App.Large", 7_000_000, None]) for i in range(1, 101))
        await s.send_all(requests)
        peak = 0
        deadline = trio.current_time() + wait
        while trio.current_time() < deadline:
            peak = max(peak, side.status("VmRSS"))
            await trio.sleep(0.05)
        closed = side.sockets() == 1  # the listener only
        await s.aclose()
        return {
            "request bytes": str(len(requests)),
            "peak RSS": f"{max(peak, side.status('VmHWM')) / MiB:.0f} MiB",
            f"connection closed within {wait:g} s": "yes" if closed else "no",
        }
    finally:
        side.stop()


async def guesses(binary: Path, flags: list[str]) -> dict[str, str]:
    side = Sidecar(binary, flags, env={"GOTASK_SECRET": SECRET})
    try:
        tried = 0
        wrong = frame([2, "$auth", "a wrong guess"])

        async def guesser() -> None:
            nonlocal tried
            while True:
                s = await dial(side.address)
                await s.send_all(wrong)
                while await s.receive_some():
                    pass
                await s.aclose()
                tried += 1

        with trio.move_on_after(3):
            async with trio.open_nursery() as nursery:
                for _ in range(8):
                    nursery.start_soon(guesser)
        return {"guesses per second": f"{tried / 3:.0f}", "log bytes": str(side.log_bytes())}
    finally:
        side.stop()


async def attack_all(binary: Path, flags: list[str], usage: str) -> dict[str, dict[str, str]]:
    def given(flag: str) -> list[str]:
        """``flag`` if the sidecar has it (a sidecar from before it does not)."""
        return [flag] if flag.split("=")[0] + " " in usage else []

    return {
        "declared": await declared(binary, flags),
        "idle": await idle(binary, flags + given("-handshake-timeout=2s"), 3),
        "unread": await unread(binary, flags + given("-write-timeout=2s"), 4),
        "guesses": await guesses(binary, flags),
    }


def raise_file_limit() -> None:
    """Let this process hold the idle attack's 5,000 connections."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 16384)), hard))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--before", help="also attack the example sidecar of this git revision")
    parser.add_argument("--flags", default="", help="comma-separated sidecar flags for every run")
    args = parser.parse_args()
    flags = [f for f in args.flags.split(",") if f]
    raise_file_limit()
    results: dict[str, dict[str, dict[str, str]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        runs: list[tuple[str, str | None]] = [("after", None)]
        if args.before:
            runs.insert(0, (f"before ({args.before})", args.before))
        for label, rev in runs:
            folder = Path(tmp) / label.split()[0]
            folder.mkdir()
            binary = build(rev, folder)
            usage = subprocess.run([str(binary), "-h"], capture_output=True, text=True).stderr
            print(f"attacking {label} ...", file=sys.stderr)
            results[label] = trio.run(attack_all, binary, flags, usage)
    labels = list(results)
    print(f"| attack | measure | {' | '.join(labels)} |")
    print("|---|---|" + "---:|" * len(labels))
    first = results[labels[-1]]
    for attack, measures in first.items():
        for measure in measures:
            cells = [results[label][attack].get(measure, "n/a") for label in labels]
            print(f"| {attack} | {measure} | {' | '.join(cells)} |")


if __name__ == "__main__":
    main()
