"""gevent greenlets for test_gevent.py (echion's target_gevent, shorter):
``f3`` sleeps, then spawns ``f1`` and joins it; ``f2`` sleeps longer;
the main greenlet joins both."""

import gevent
import gevent.monkey

gevent.monkey.patch_all()


def f1():
    gevent.sleep(0.5)  #@f1
    print("f1 done", flush=True)


def f2():
    gevent.sleep(1.2)  #@f2
    print("f2 done", flush=True)


def f3():
    gevent.sleep(0.5)  #@f3-sleep
    gevent.spawn(f1).join()  #@f3-join
    print("f3 done", flush=True)


def main():
    done = gevent.joinall([gevent.spawn(f3), gevent.spawn(f2)])  #@joinall
    print("joined", len(done), all(g.dead for g in done), flush=True)


if __name__ == "__main__":
    main()
