"""Non-ASCII names everywhere: this file's name, a class, its method, a
function and a thread. Reports nothing: the names are in the source."""

import threading
import time


class Données:
    def 計算(self, seconds):
        time.sleep(seconds)  #@compute


def café(seconds):
    Données().計算(seconds)  #@cafe


def main():
    t = threading.Thread(target=café, args=(0.6,), name="ñandú-計算")
    t.start()
    café(0.6)  #@main-cafe
    t.join()


main()  #@main
