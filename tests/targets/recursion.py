"""A stack 900 frames deep (plus <module> and main), resting at the bottom."""

import sys
import time

DEPTH = 900


def bottom():
    time.sleep(0.6)  #@bottom


def recurse(n):
    if n > 1:
        return recurse(n - 1)  #@recurse
    return bottom()  #@last


def main():
    sys.setrecursionlimit(DEPTH + 100)
    recurse(DEPTH)  #@main-recurse


main()  #@main
