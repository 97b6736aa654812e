"""Soak: hundreds of threads starting, being renamed and ending, in waves;
daemon threads still spinning and sleeping when the program exits."""

import sys
import threading
import time

WAVES = int(sys.argv[1]) if len(sys.argv) > 1 else 20
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
    while True:
        sum(range(1000))
        time.sleep(0)


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
