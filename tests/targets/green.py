"""gevent greenlets for test_gevent.py (echion's target_gevent, shorter):
``f3`` sleeps, then spawns ``f1`` and joins it; ``f2`` sleeps throughout;
the main greenlet joins both."""

import gevent
import gevent.monkey

gevent.monkey.patch_all()


def f1():
    gevent.sleep(0.5)  #@f1


def f2():
    gevent.sleep(1)  #@f2


def f3():
    gevent.sleep(0.5)  #@f3-sleep
    gevent.spawn(f1).join()  #@f3-join


def main():
    gevent.joinall([gevent.spawn(f3), gevent.spawn(f2)])  #@joinall


if __name__ == "__main__":
    main()
