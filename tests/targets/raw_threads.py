"""Threads that `threading` does not know: one started with
`_thread.start_new_thread`, one created by C code (`pthread_create` through
ctypes, whose callback registers the thread with the interpreter as a C
extension would). Each burns CPU in a known function; reports their native
ids, lifetimes and CPU times."""

import _thread
import ctypes
import threading
import time

from _common import report

SECONDS = 0.6


def burn(seconds):
    end = time.thread_time() + seconds
    while time.thread_time() < end: pass  #@burn


def raw_body(out, done):
    t0, c0 = time.monotonic(), time.thread_time()
    burn(SECONDS)  #@raw
    out["raw"] = {"native_id": threading.get_native_id(), "wall": time.monotonic() - t0, "cpu": time.thread_time() - c0}
    done.release()


def c_body(arg):
    t0, c0 = time.monotonic(), time.thread_time()
    burn(SECONDS)  #@c
    OUT["c"] = {"native_id": threading.get_native_id(), "wall": time.monotonic() - t0, "cpu": time.thread_time() - c0}
    return None


OUT = {}
CALLBACK = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_void_p)


def main():
    done = _thread.allocate_lock()
    done.acquire()
    _thread.start_new_thread(raw_body, (OUT, done))
    done.acquire()  #@wait_raw

    libc = ctypes.CDLL(None)
    callback = CALLBACK(c_body)
    handle = ctypes.c_ulong()
    assert libc.pthread_create(ctypes.byref(handle), None, callback, None) == 0
    libc.pthread_join(handle, None)  #@wait_c
    report(**OUT)


main()
