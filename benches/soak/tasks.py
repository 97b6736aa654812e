"""Soak: thousands of asyncio tasks created, cancelled and finished, some
gathered, some waited, some in a TaskGroup (3.11+)."""

import asyncio
import sys

ROUNDS = int(sys.argv[1]) if len(sys.argv) > 1 else 20


async def leaf(i):
    await asyncio.sleep(0.0005 * (i % 3))
    return i


async def sleeper():
    await asyncio.sleep(10)


async def main():
    total = cancelled = 0
    for r in range(ROUNDS):
        ts = [asyncio.create_task(leaf(i), name="t-%d-%d" % (r, i)) for i in range(200)]
        doomed = [asyncio.create_task(sleeper()) for _ in range(100)]
        await asyncio.sleep(0)
        for d in doomed:
            d.cancel()
        for d in doomed:
            try:
                await d
            except asyncio.CancelledError:
                cancelled += 1
        total += sum(await asyncio.gather(*ts))
        done, _ = await asyncio.wait([asyncio.ensure_future(leaf(i)) for i in range(50)])
        total += sum(t.result() for t in done)
        if hasattr(asyncio, "TaskGroup"):
            async with asyncio.TaskGroup() as tg:
                for i in range(50):
                    tg.create_task(leaf(i))
    print("tasks", total, cancelled)


asyncio.run(main())
