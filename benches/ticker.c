/* A thread that wakes up every millisecond and does nothing else, started
 * in any process that preloads this library (LD_PRELOAD): the cost of a
 * 1 ms wake-up on this machine, which every in-process sampler at 1 ms
 * pays before it reads anything. benches/overhead.py --floor builds it. */
#include <pthread.h>
#include <time.h>

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

__attribute__((constructor)) static void start(void) {
    pthread_t thread;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_create(&thread, &attr, tick, NULL);
    pthread_attr_destroy(&attr);
}
