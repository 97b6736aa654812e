"""Soak: hundreds of threads starting, being renamed and ending, in waves;
daemon threads still spinning and sleeping when the program exits."""

import sys
import threading
import time

# Ten waves a round: a wave of 25 threads takes about a millisecond.
WAVES = 10 * (int(sys.argv[1]) if len(sys.argv) > 1 else 20)
done = []
lock = threading.Lock()


def work(i):
    threading.current_thread().name = "renamed-%d" % i
    x = 0
    for k in range(200):
        x += k * i
    with lock:
        done.append(x % 7)


def spin():
    # Busy, but giving the GIL up for a moment: with `sleep(0)` every start
    # of a thread on 3.8-3.10 waited for the 5 ms switch interval (a GIL
    # convoy), the program took 10-40 s plain and several times as long
    # traced, and the soak measured the convoy's variance, not echion.
    while True:
        sum(range(1000))
        time.sleep(0.0005)


def nap():
    while True:
        time.sleep(0.001)


threading.Thread(target=spin, name="spinner", daemon=True).start()
for _ in range(4):
    threading.Thread(target=nap, daemon=True).start()
for w in range(WAVES):
    ts = [threading.Thread(target=work, args=(w * 100 + i,), name="wave-%d" % i) for i in range(25)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
print("threads", len(done), sum(done))
