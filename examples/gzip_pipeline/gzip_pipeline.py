"""A file compressed in Go, streamed back, and cancelled midway: python examples/gzip_pipeline/gzip_pipeline.py [FILE]

The Go sidecar reads the file (by default, 16 MiB of a generated web server log) and compresses
it, and sends the compressed bytes back as a stream of chunks of about 64 KiB, which this program
writes into a .gz file in a temporary folder as they arrive; gunzip reads it as usual. Then the
same again, cancelled once Go is halfway through the file, as a user's click on Cancel would:
leaving the stream cancels the Go method's context, and no partial file is left.
"""

from __future__ import annotations

import gzip
import logging
import random
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import trio

from trio_gotask import GoTask, open_gotask

SIDECAR = Path(__file__).resolve().parent
WINDOW = 256 << 10  # compressed bytes Go may send ahead of what this program has written
MiB = 1 << 20


async def compress_file(
    gt: GoTask, source: Path, target: Path, progress: Callable[[int], object] = lambda read: None
) -> None:
    """Compress source into target with gzip, in Go, writing each chunk as it arrives; after each,
    ``progress`` gets how many bytes of source Go has compressed. Cancelled, or failing, it leaves
    no target behind: it writes target.part and renames it at the end."""
    partial = target.with_name(target.name + ".part")
    try:
        async with (
            await trio.open_file(partial, "wb") as out,
            gt.stream("Gzip.Compress", str(source), window=WINDOW) as chunks,
        ):
            async for chunk in chunks:
                await out.write(chunk["data"])
                progress(chunk["read"])
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
            start = time.perf_counter()
            await compress_file(gt, source, target)
            elapsed = time.perf_counter() - start
            print(
                f"compressed {size / MiB:.1f} MiB into {target.stat().st_size / MiB:.1f} MiB in {elapsed:.2f} s"
                f" ({size / MiB / elapsed:.0f} MiB/s), streamed back in chunks of 64 KiB"
            )
            print("gunzip gives the file back:", gzip.decompress(target.read_bytes()) == source.read_bytes())
            target.unlink()

            with trio.CancelScope() as cancel:

                def click_cancel_halfway(read: int) -> None:
                    if read >= size / 2:
                        cancel.cancel()

                await compress_file(gt, source, target, progress=click_cancel_halfway)
            print(f"compressing again, cancelled halfway through: {cancel.cancelled_caught}")
            left = await trio.Path(folder).glob(target.name + "*")
            print(f"files left: {[path.name for path in left]}")


if __name__ == "__main__":
    trio.run(main, Path(sys.argv[1]) if len(sys.argv) > 1 else None)
