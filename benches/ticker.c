/* A 1 ms tick that does nothing else, started in any process that preloads
 * this library (LD_PRELOAD): the cost of a 1 ms wake-up on this machine,
 * which every in-process sampler at 1 ms pays before it reads anything.
 * benches/overhead.py --floor and benches/startup.py build it.
 *
 * ECHION_TICKER=signal: no thread; a POSIX timer sends the main thread a
 * signal every 1 ms, whose handler returns at once (SA_RESTART: most of the
 * program's blocking calls go on; sleeps and polls return early, which
 * CPython retries). A ticker that cannot start ends the process (status
 * 99) rather than measure plain Python under its name. What a sampler pays that is not a
 * thread of the process: a fork loop tells them apart (a second thread
 * sends the C library's fork down its multi-threaded path, and one that
 * ran on another CPU lately makes every fork interrupt that CPU to flush
 * its TLB; see benches/startup.py).
 *
 * Two more forms measure a fork loop's floor (benches/startup.py):
 * ECHION_TICKER=idle starts a thread that never wakes (what a second
 * thread costs each fork before it runs at all: the C library's fork
 * takes its multi-threaded path); ECHION_TICKER=signal-fork is `signal`
 * plus, in every forked child, the timers echion's put-off start arms in
 * the fork, never fired (what a sampler that starts again in each child
 * pays in one that leaves sooner): one of the thread's CPU clock, 1 ms,
 * and one of the monotonic clock, 16 ms; ECHION_TICKER=signal-fork-1ms
 * arms one of the monotonic clock, 1 ms ahead, instead (on a virtual
 * machine, a timer due before the CPU's next tick costs two exits to the
 * hypervisor: its arming, and its deletion by the child that ends). */
#define _GNU_SOURCE
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static void *tick(void *unused) {
    struct timespec t;
    (void)unused;
    clock_gettime(CLOCK_MONOTONIC, &t);
    for (;;) {
        t.tv_nsec += 1000000;
        if (t.tv_nsec >= 1000000000) {
            t.tv_nsec -= 1000000000;
            t.tv_sec += 1;
        }
        clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &t, NULL);
    }
    return NULL;
}

static void *idle(void *unused) {
    (void)unused;
    for (;;)
        pause();
    return NULL;
}

static void on_tick(int signo) { (void)signo; }

#ifndef sigev_notify_thread_id
#define sigev_notify_thread_id _sigev_un._tid
#endif

static void fail(const char *what) {
    perror(what);
    _exit(99);
}

static void start_signal(void) {
    struct sigaction action;
    struct sigevent event;
    struct itimerspec every = {{0, 1000000}, {0, 1000000}};
    timer_t timer;
    int signo = SIGRTMIN + 3;
    memset(&action, 0, sizeof action);
    action.sa_handler = on_tick;
    action.sa_flags = SA_RESTART;
    if (sigaction(signo, &action, NULL) != 0)
        fail("ticker: sigaction");
    memset(&event, 0, sizeof event);
    event.sigev_notify = SIGEV_THREAD_ID;
    event.sigev_signo = signo;
    event.sigev_notify_thread_id = (pid_t)syscall(SYS_gettid);
    if (timer_create(CLOCK_MONOTONIC, &event, &timer) != 0)
        fail("ticker: timer_create");
    if (timer_settime(timer, 0, &every, NULL) != 0)
        fail("ticker: timer_settime");
}

/* In a forked child: the timers a put-off start arms (see the top; the
 * child's ticks are left off: it leaves first). */
static int late_start;

static void arm(clockid_t clock, long ns) {
    struct sigevent event;
    struct itimerspec once = {{0, 0}, {ns / 1000000000L, ns % 1000000000L}};
    timer_t timer;
    memset(&event, 0, sizeof event);
    event.sigev_notify = SIGEV_THREAD_ID;
    event.sigev_signo = SIGRTMIN + 3;
    event.sigev_notify_thread_id = (pid_t)syscall(SYS_gettid);
    if (timer_create(clock, &event, &timer) == 0)
        timer_settime(timer, 0, &once, NULL);
}

static void arm_in_child(void) {
    if (late_start) {
        arm(CLOCK_THREAD_CPUTIME_ID, 1000000L);
        arm(CLOCK_MONOTONIC, 16000000L);
    } else {
        arm(CLOCK_MONOTONIC, 1000000L);
    }
}

__attribute__((constructor)) static void start(void) {
    const char *mode = getenv("ECHION_TICKER");
    pthread_t thread;
    pthread_attr_t attr;
    if (mode && strncmp(mode, "signal", 6) == 0) {
        int fork_form = strcmp(mode, "signal-fork") == 0 || strcmp(mode, "signal-fork-1ms") == 0;
        if (strcmp(mode, "signal") != 0 && !fork_form) {
            fputs("ticker: unknown ECHION_TICKER\n", stderr);
            _exit(99);
        }
        start_signal();
        late_start = strcmp(mode, "signal-fork") == 0;
        if (fork_form && pthread_atfork(NULL, NULL, arm_in_child) != 0)
            fail("ticker: pthread_atfork");
        return;
    }
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    if (pthread_create(&thread, &attr, mode && strcmp(mode, "idle") == 0 ? idle : tick, NULL) != 0)
        fail("ticker: pthread_create");
    pthread_attr_destroy(&attr);
}
