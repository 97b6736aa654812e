"""The process recorded into the memory images of tests/images.rs (by
`cargo run -p echion-sampler --example record_images`).

Threads in known places: ``worker`` (a `threading` thread) waits in
``phase_a``; ``hidden`` (a `threading` thread the tests do not name) waits
in ``hidden_wait``; a thread started with ``_thread`` waits in
``raw_wait``; the main thread waits for a command on stdin. On ``b`` the
worker moves on to ``phase_b`` -> ``deeper`` and waits there. After each
phase the target prints one JSON line saying where every thread is (from
``sys._current_frames()``), then waits for the next command.
"""

import _thread
import json
import sys
import threading
import time

go_b = threading.Event()
forever = threading.Event()
ready = threading.Semaphore(0)
raw_native = []


def phase_a():
    ready.release()
    go_b.wait()
    phase_b()


def phase_b():
    deeper()


def deeper():
    ready.release()
    forever.wait()


def hidden_wait():
    ready.release()
    forever.wait()


def raw_wait():
    raw_native.append(threading.get_native_id())
    ready.release()
    forever.wait()


def stack_of(frame):
    out = []
    while frame is not None:
        code = frame.f_code
        out.append([code.co_name, getattr(code, "co_qualname", code.co_name), frame.f_lineno])
        frame = frame.f_back
    out.reverse()
    return out


def report(phase):
    # Let every thread reach its wait, then say where it is.
    time.sleep(0.2)
    names = {t.ident: t.name for t in threading.enumerate()}
    natives = {t.ident: t.native_id for t in threading.enumerate()}
    threads = []
    for ident, frame in sys._current_frames().items():
        if ident == threading.get_ident():
            continue
        native = natives.get(ident)
        if ident not in names:
            native = raw_native[0]
        threads.append({"ident": ident, "name": names.get(ident), "native_id": native, "stack": stack_of(frame)})
    main = threading.main_thread()
    print(json.dumps({
        "phase": phase,
        "version": list(sys.version_info[:3]),
        "bootstrap_code": id(threading.Thread._bootstrap.__code__),
        "main": {"ident": main.ident, "native_id": main.native_id},
        "threads": threads,
    }), flush=True)


def wait_for_command():
    return sys.stdin.readline().strip()  #@command


def main():
    threading.Thread(target=phase_a, name="worker", daemon=True).start()
    threading.Thread(target=hidden_wait, name="hidden", daemon=True).start()
    _thread.start_new_thread(raw_wait, ())
    for _ in range(3):
        ready.acquire()
    report("a")
    if wait_for_command() == "b":
        go_b.set()
        ready.acquire()
        report("b")
        wait_for_command()


main()
