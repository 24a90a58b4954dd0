/* threadbench [N]: thread throughput, run on the host and in the guest by scripts/bench-mm.sh:
 * futex ping-pong round trips per second between two threads (each waits on its own word, the other
 * sets it and wakes it: two waits, two wakes and two switches per round trip), and pthread_create +
 * pthread_join pairs per second. */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define FUTEX_WAIT_PRIVATE 128
#define FUTEX_WAKE_PRIVATE 129

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

static _Atomic int ping, pong;
static int rounds;

static void wait_for(_Atomic int *w, int v) {
    while (atomic_load(w) != v)
        syscall(SYS_futex, w, FUTEX_WAIT_PRIVATE, atomic_load(w), NULL, NULL, 0);
}

static void post(_Atomic int *w, int v) {
    atomic_store(w, v);
    syscall(SYS_futex, w, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
}

static void *ponger(void *arg) {
    (void)arg;
    for (int i = 1; i <= rounds; i++) {
        wait_for(&ping, i);
        post(&pong, i);
    }
    return NULL;
}

static void *nothing(void *arg) { return arg; }

int main(int argc, char **argv) {
    rounds = argc > 1 ? atoi(argv[1]) : 1000;
    pthread_t t;
    pthread_create(&t, NULL, ponger, NULL);
    double t0 = now();
    for (int i = 1; i <= rounds; i++) {
        post(&ping, i);
        wait_for(&pong, i);
    }
    double el = now() - t0;
    pthread_join(t, NULL);
    printf("threadbench: futex ping-pong: %d round trips in %.3f s: %.0f/s, %.1f us each\n", rounds, el,
           rounds / el, el / rounds * 1e6);
    int n = rounds / 10 > 0 ? rounds / 10 : 1;
    t0 = now();
    for (int i = 0; i < n; i++) {
        pthread_create(&t, NULL, nothing, NULL);
        pthread_join(t, NULL);
    }
    el = now() - t0;
    printf("threadbench: pthread_create+join: %d in %.3f s: %.0f/s, %.1f us each\n", n, el, n / el,
           el / n * 1e6);
    return 0;
}
