"""Step 4 of the tutorial (docs/tutorial.md): run it beside the greeter/ folder."""

import trio

from trio_gotask import open_gotask


async def main() -> None:
    async with open_gotask("greeter") as gt:
        with trio.move_on_after(0.5) as scope:
            await gt.call("App.Wait", 3600)  # an hour of work...
        print("cancelled after 0.5 s:", scope.cancelled_caught)  # ...given up sooner

        with trio.fail_after(60):
            left = await gt.call("App.TimeLeft")
        print("Go saw the deadline, less than a minute away:", 0 < left < 60)

        try:
            with trio.fail_after(0.5):
                await gt.call("App.Wait", 3600)
        except trio.TooSlowError:
            print("too slow: trio.TooSlowError")


trio.run(main)
