"""1,000 asyncio tasks, each sleeping 100 times for 20 to 29 ms (the
issue's task-switch workload): about 2.5 s of wall time, 100,000 task
steps."""

import asyncio


async def worker(i):
    delay = (20 + i % 10) / 1000
    for _ in range(100):
        await asyncio.sleep(delay)


async def main():
    await asyncio.gather(*(worker(i) for i in range(1000)))


asyncio.run(main())
