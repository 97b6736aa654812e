# Input of the committed line-table fixtures (3.8.bin ... 3.13.bin next to
# this file). It exercises the corners of every table format: long line jumps,
# long single-line code, wide columns, multi-line spans, negative line deltas,
# instructions without a location, and non-ASCII names. Regenerate with
# tools/linetable/gen_linetable_fixtures.py (see README.md here).
import asyncio


def simple(a):
    x = a + 1
    if x:
        return [i for i in range(x)]
    return None


def multiline(items):
    return [
        i
        for i in items
        if i
    ]


def call_across_lines(f, a, b):
    return f(
        a,
        b,
        key=lambda v: (
            v
            + 1
        ),
    )


def long_line(f):
    return f(1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40) + f(41, 42, 43, 44, 45, 46, 47, 48, 49, 50, 51, 52, 53, 54, 55, 56, 57, 58, 59, 60, 61, 62, 63, 64, 65, 66, 67, 68, 69, 70, 71, 72, 73, 74, 75, 76, 77, 78, 79, 80)


def many_loads(a):
    b = [a, a, a, a, a, a, a, a, a, a, a, a, a, a, a, a, a, a, a, a, a, a, a, a, a, a, a, a, a, a, a, a, a, a, a, a, a, a, a, a, a, a, a, a, a, a, a, a, a, a, a, a, a, a, a, a, a, a, a, a, a, a, a, a, a, a, a, a, a, a, a, a, a, a, a, a, a, a, a, a, a, a, a, a, a, a, a, a, a, a, a, a, a, a, a, a, a, a, a, a, a, a, a, a, a, a, a, a, a, a, a, a, a, a, a, a, a, a, a, a, a, a, a, a, a, a, a, a, a, a, a, a, a, a, a, a, a, a, a, a, a, a, a, a, a, a, a, a, a, a]
    return b


def short_columns(alpha, beta, gamma, delta, epsilon, zeta, eta, theta, iota, kappa):
    result = alpha + beta + gamma + delta + epsilon + zeta + eta + theta + iota + kappa
    return result


def wide_columns(obj):
    _______________________________________________________________________________________________________________________________x = obj
    return _______________________________________________________________________________________________________________________________x.attribute_far_to_the_right


def big_line_jump(a):
    b = a
    """
    A long string statement so the next line is far away.
    """
    if b:
        c = 1
























































































































































        return c + b
    return b


def handlers(path):
    try:
        with open(path) as fh:
            return fh.read()
    except OSError as e:
        raise RuntimeError(path) from e
    finally:
        path = None


def loops(n):
    total = 0
    while n:
        n -= 1
        for i in range(n):
            if i % 3:
                continue
            total += i
    else:
        total = -total
    return total


def 計算(café):
    return café * 2 + len("計算") + café


class Klass:
    attr = [x * 2 for x in range(3)]

    def method(self, *args, **kwargs):
        def inner():
            nonlocal args
            return args
        return inner

    @property
    def prop(self):
        return (yield self)


async def coroutine(q):
    async with q as r:
        async for item in r:
            await asyncio.sleep(0)
    return {k: v for k, v in q.items()}


gen = (y for y in range(3))
