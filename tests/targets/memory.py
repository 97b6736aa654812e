"""Memory-mode scenarios, chosen by the first argument; each reports what
it measured itself (sizes as CPython's allocators see them) to the test.

hold      a function keeps about 50 MB alive in many objects while another
          one churns temporaries before, around and after it
hold_few  the same 50 MB in 5,000 objects of 10,000 bytes, a tenth of the
          churn (a smaller profile, for the tests that read every sample)
threads   named threads each keep a known amount alive
realloc   a list grows by appending: its item array is reallocated
fork      the parent and a forked child each keep their own block alive
leak      upstream echion's target_mem.py: 100,000 dataclass objects kept
late      waits half a second, then keeps 5 MB
raw       threads compress with zlib, which allocates in the raw domain
          without the GIL
subinterp a subinterpreter allocates 3 MB (line 1 of its code)
code N    N code objects made by exec (file "<gen-I>"), each
          allocating a bytearray(1000 + I) held for eight rounds (every
          hundredth is held to the end), then freed with their code
exit      sys.exit(3) after a few allocations
empty     nothing at all
"""

import os
import sys
import threading
import time

from _common import report

HELD = []


def churn(n):
    for i in range(n):
        tmp = [bytearray(100) for _ in range(10)]  #@churn
        del tmp


def hold(n, size):
    for _ in range(n):
        HELD.append(bytearray(size))  #@hold


def scenario_hold():
    churn(20_000)
    # 50,000 objects of 1,000 bytes of payload: 50 MB, and a little more
    # for each bytearray's header.
    hold(50_000, 1000)
    churn(20_000)
    time.sleep(0.05)
    report(held=sum(sys.getsizeof(b) for b in HELD))


def keep(out, name, n, size):
    mine = [bytes(size) for _ in range(n)]  #@keep
    out[name] = sum(sys.getsizeof(b) for b in mine)
    time.sleep(0.1)
    out[name + "_alive"] = len(mine)
    KEPT.append(mine)


KEPT = []


def scenario_hold_few():
    churn(2_000)
    hold(5_000, 10_000)
    churn(2_000)
    time.sleep(0.05)
    report(held=sum(sys.getsizeof(b) for b in HELD))


def scenario_threads():
    out = {}
    sizes = {"alloc-a": (1000, 2000), "alloc-b": (3000, 2000), "alloc-c": (500, 8000)}
    threads = [threading.Thread(target=keep, args=(out, name, n, size), name=name) for name, (n, size) in sizes.items()]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    time.sleep(0.05)
    report(**out)


def grow(lst, n):
    for _ in range(n):
        lst.append(None)  #@grow


def scenario_realloc():
    lst = []
    HELD.append(lst)
    grow(lst, 1_000_000)
    time.sleep(0.05)
    # The item array as allocated: what sys.getsizeof adds to an empty list.
    report(items=sys.getsizeof(lst) - sys.getsizeof([]), length=len(lst))


def child_keep(n, size):
    return [bytes(size) for _ in range(n)]  #@child_keep


def parent_keep(n, size):
    return [bytes(size) for _ in range(n)]  #@parent_keep


def scenario_fork():
    mine = parent_keep(2000, 1000)
    HELD.append(mine)
    pid = os.fork()
    if pid == 0:
        kept = child_keep(3000, 1000)
        time.sleep(0.2)
        # No atexit, no finalisation: the profile holds what was flushed.
        os._exit(0 if len(kept) == 3000 else 1)
    _, status = os.waitpid(pid, 0)
    time.sleep(0.05)
    report(child=pid, status=status, parent_held=len(mine))


def scenario_leak():
    from dataclasses import dataclass

    @dataclass
    class Foo:
        n: int

    a = []
    HELD.append(a)
    for i in range(100_000):
        a.append(Foo(i))  #@leak
    report(n=len(a))


def scenario_late():
    time.sleep(0.5)
    hold(5000, 1000)
    report(n=len(HELD))


def compress_many(data, n, out, name):
    import zlib

    # zlib's buffers come from the raw domain, taken while the GIL is
    # released.
    out[name] = all(zlib.decompress(zlib.compress(data, 6)) == data for _ in range(n))  #@compress


def scenario_raw():
    data = os.urandom(1 << 16) * 16
    out = {}
    threads = [threading.Thread(target=compress_many, args=(data, 20, out, "z%d" % i), name="z%d" % i) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    report(**out)


SUB_CODE = """data = [bytearray(1000) for _ in range(3000)]
import time
time.sleep(0.3)
"""


def scenario_subinterp():
    try:
        import _interpreters as interpreters  # 3.13
    except ImportError:
        import _xxsubinterpreters as interpreters  # 3.8 to 3.12
    iid = interpreters.create()
    interpreters.run_string(iid, SUB_CODE)
    main_id = interpreters.get_main()
    if isinstance(main_id, tuple):  # 3.13: (id, whence)
        main_id = main_id[0]
    report(sub=int(iid), main=int(main_id))


GEN_SOURCE = """
def make(n):
    return bytearray(n)
kept = make(SIZE)
"""


def scenario_code():
    window, sizes = [], {}
    for i in range(int(sys.argv[2])):
        ns = {"SIZE": 1000 + i}
        exec(compile(GEN_SOURCE, "<gen-%d>" % i, "exec"), ns)
        kept = ns["kept"]
        if i % 100 == 0:
            HELD.append(kept)
            sizes[i] = sys.getsizeof(kept)
            # Let the sampler in: its drains write the stacks' changes.
            time.sleep(0.002)
        window.append(kept)
        if len(window) > 8:
            window.pop(0)
        # `make` and `ns` refer to each other: freed now, not by a
        # collection at some later time.
        ns.clear()
        del ns, kept
    report(held=sizes)


def scenario_exit():
    HELD.append([bytearray(10) for _ in range(1000)])
    sys.exit(3)


def scenario_empty():
    pass


if __name__ == "__main__":
    globals()["scenario_" + sys.argv[1]]()
