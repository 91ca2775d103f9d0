"""A binary pipeline through Go, and cancelling it midway: python examples/gzip_pipeline/gzip_pipeline.py [FILE]

The file (by default, 16 MiB of a generated web server log) is read in chunks of 2 MiB; the Go
sidecar compresses four of them at a time, each into a gzip member, and they are written in order
into a .gz file in a temporary folder, which gunzip reads as usual. Go reports its progress to this
program (a host call). Then the same again, cancelled once Go is halfway through, as a user's click
on Cancel would: the calls in flight are cancelled, their Go contexts too, and no partial file is
left.
"""

from __future__ import annotations

import gzip
import logging
import math
import random
import sys
import tempfile
import time
from pathlib import Path

import trio

from trio_gotask import GoTask, open_gotask

SIDECAR = Path(__file__).resolve().parent
CHUNK = 2 << 20  # bytes per call
PARALLEL = 4  # calls in flight at once
MiB = 1 << 20


class Progress:
    """Counts the bytes Go starts compressing: its method `compressing` handles the host call
    Progress.Compressing. Once Go has started on ``cancel_at`` bytes, it cancels `scope`."""

    def __init__(self, cancel_at: float = math.inf) -> None:
        self.started = 0
        self.cancel_at = cancel_at
        self.scope = trio.CancelScope()
        self.go_stopped = trio.Event()
        """Set when Go gave up the report that cancelled `scope`: the cancellation reached it."""

    async def compressing(self, size: int) -> None:
        self.started += size
        if self.started < self.cancel_at or self.scope.cancel_called:
            return
        self.scope.cancel()
        # Leave this report unanswered: the chunk Go is about to compress waits here until the
        # cancellation reaches Go, so it certainly stops midway, and Go then cancels this handler.
        try:
            await trio.sleep_forever()
        finally:
            self.go_stopped.set()


class Slot:
    """Where a chunk's compressed bytes arrive, for the writer to take in the file's order."""

    def __init__(self) -> None:
        self.ready = trio.Event()
        self.member = b""


async def compress_chunk(gt: GoTask, chunk: bytes, slot: Slot) -> None:
    slot.member = await gt.call("Gzip.Compress", chunk)
    slot.ready.set()


async def compress_file(gt: GoTask, source: Path, target: Path) -> None:
    """Compress source into target with gzip, PARALLEL chunks at a time. Cancelled, or failing, it
    leaves no target behind: it writes target.part and renames it at the end."""
    partial = target.with_name(target.name + ".part")
    # A slot waits in the channel from its chunk's call until the writer takes it: the channel's
    # size bounds the chunks in memory.
    send, receive = trio.open_memory_channel[Slot](PARALLEL - 1)
    try:
        async with trio.open_nursery() as nursery:

            async def read() -> None:
                async with send, await trio.open_file(source, "rb") as file:
                    while chunk := await file.read(CHUNK):
                        slot = Slot()
                        await send.send(slot)
                        nursery.start_soon(compress_chunk, gt, chunk, slot)

            nursery.start_soon(read)
            async with await trio.open_file(partial, "wb") as out:
                async for slot in receive:
                    await slot.ready.wait()
                    await out.write(slot.member)
        await trio.Path(partial).rename(target)
    except BaseException:
        with trio.CancelScope(shield=True):  # the cleanup runs even in a cancelled scope
            await trio.Path(partial).unlink(missing_ok=True)
        raise


def make_log(path: Path, size: int) -> None:
    """Write size bytes or a little more of a made-up web server log to path."""
    rng = random.Random(1)
    requests = [
        f"10.0.{rng.randrange(256)}.{rng.randrange(256)} GET /api/items/{rng.randrange(500)} "
        f"{rng.choice((200, 200, 200, 304, 404, 500))} {rng.randrange(100_000)} bytes in {rng.randrange(1, 900)} ms"
        for _ in range(10_000)
    ]
    with path.open("w") as file:
        line = 0
        while file.tell() < size:
            block = rng.choices(requests, k=10_000)
            file.write(
                "".join(f"{1_790_000_000 + (line + k) // 20} {request}\n" for k, request in enumerate(block))
            )
            line += len(block)


async def main(source: Path | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(name)s %(levelname)s: %(message)s")
    with tempfile.TemporaryDirectory() as folder:
        if source is None:
            source = Path(folder) / "access.log"
            make_log(source, 16 * MiB)
        target = Path(folder) / (source.name + ".gz")
        size = source.stat().st_size
        async with open_gotask(SIDECAR) as gt:
            gt.register("Progress.Compressing", Progress().compressing)
            start = time.perf_counter()
            await compress_file(gt, source, target)
            elapsed = time.perf_counter() - start
            print(
                f"compressed {size / MiB:.1f} MiB into {target.stat().st_size / MiB:.1f} MiB in {elapsed:.2f} s"
                f" ({size / MiB / elapsed:.0f} MiB/s), {PARALLEL} chunks of {CHUNK // MiB} MiB at a time"
            )
            print("gunzip gives the file back:", gzip.decompress(target.read_bytes()) == source.read_bytes())
            target.unlink()

            progress = Progress(cancel_at=size / 2)
            gt.register("Progress.Compressing", progress.compressing)  # replaces the first
            with progress.scope:
                await compress_file(gt, source, target)
            if progress.scope.cancelled_caught:
                # Go cancels the report it was waiting on once the cancellation reaches it.
                await progress.go_stopped.wait()
            print(f"compressing again, cancelled halfway through: {progress.scope.cancelled_caught}")
            print(
                f"calls cancelled in flight: {gt.statistics().calls_cancelled}; partial file left: {target.exists()}"
            )


if __name__ == "__main__":
    trio.run(main, Path(sys.argv[1]) if len(sys.argv) > 1 else None)
