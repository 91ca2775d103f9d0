"""Step 3 of the tutorial (docs/tutorial.md): run it beside the greeter/ folder."""

import trio

from trio_gotask import BadParams, open_gotask


async def main() -> None:
    async with open_gotask("greeter") as gt:  # builds greeter/, starts it, connects
        print(await gt.call("App.Hi", "Ada"))
        try:
            await gt.call("App.Hi", 42)  # Hi takes a string
        except BadParams as exc:
            print(exc)
    # Here the sidecar has exited: leaving the block stops it.


trio.run(main)
