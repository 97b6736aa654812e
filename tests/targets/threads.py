"""Two named threads with known stacks, one sleeping and one burning CPU,
while the main thread waits for them. Reports each thread's lifetime and
CPU time as measured here."""

import os
import threading
import time

from _common import report

T0 = time.monotonic()

SECONDS = float(os.environ.get("TARGET_SECONDS", "1.0"))


def burn(seconds):
    end = time.thread_time() + seconds
    while time.thread_time() < end: pass  #@burn


def snooze(seconds):
    time.sleep(seconds)  #@snooze


def burner(out):
    t0, c0 = time.monotonic(), time.thread_time()
    burn(SECONDS)  #@burner
    c1 = time.thread_time()
    out["burner"] = {"wall": time.monotonic() - t0, "cpu_burn": c1 - c0, "cpu": c1, "native_id": threading.get_native_id()}


def sleeper(out):
    t0 = time.monotonic()
    snooze(SECONDS)  #@sleeper
    out["sleeper"] = {"wall": time.monotonic() - t0, "cpu": time.thread_time(), "native_id": threading.get_native_id()}


def main():
    out = {}
    workers = [
        threading.Thread(target=burner, args=(out,), name="burner"),
        threading.Thread(target=sleeper, args=(out,), name="sleeper"),
    ]
    for t in workers:
        t.start()
    t0, c0 = time.monotonic(), time.thread_time()
    for t in workers:
        t.join()  #@join
    out["main"] = {"join": time.monotonic() - t0, "join_cpu": time.thread_time() - c0}
    out["main"]["script"] = time.monotonic() - T0
    report(**out)


main()  #@main
