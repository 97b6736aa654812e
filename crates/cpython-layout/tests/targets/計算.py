"""Helper module with a non-ASCII file name and function name (live test)."""


def 計算(ev, ready):
    ready.release()
    ev.wait()
