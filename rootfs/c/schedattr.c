/* schedattr: sched_setattr and sched_getattr per thread (issue #16: CFS schedules threads, and the
 * sched_* calls act on one thread as on Linux; tests/tests/guest_threads.rs, glibc and musl, host
 * and guest).
 *   - A thread's nice set with sched_setattr(tid) shows in its sched_getattr and getpriority
 *     (PRIO_PROCESS, tid), not in the other thread's; SCHED_BATCH and SCHED_IDLE through it show in
 *     sched_getscheduler(tid); SCHED_FLAG_KEEP_POLICY keeps the policy, KEEP_PARAMS the nice value.
 *   - Errors as Linux: a NULL attr, flags, pid < 0: EINVAL; a size below the first version: E2BIG
 *     with the kernel's size written back; nonzero bytes past the kernel's struct: E2BIG; an
 *     unknown policy, a priority for a fair policy, unknown sched_flags: EINVAL; no such pid: ESRCH;
 *     sched_getattr with a size below 48 or above a page: EINVAL. */
#define PROG "schedattr"
#include "common.h"
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <sys/resource.h>

struct attr {
    uint32_t size, policy;
    uint64_t flags;
    int32_t nice;
    uint32_t priority;
    uint64_t runtime, deadline, period;
};

#define FLAG_KEEP_POLICY 0x08
#define FLAG_KEEP_PARAMS 0x10

static long setattr(pid_t pid, struct attr *a, unsigned flags) {
    return syscall(SYS_sched_setattr, pid, a, flags);
}

static long getattr(pid_t pid, struct attr *a, unsigned size, unsigned flags) {
    return syscall(SYS_sched_getattr, pid, a, size, flags);
}

static pthread_barrier_t start, done;
static pid_t worker_tid;

static void *worker(void *arg) {
    (void)arg;
    worker_tid = (pid_t)syscall(SYS_gettid);
    pthread_barrier_wait(&start);
    pthread_barrier_wait(&done);
    return NULL;
}

static void show(const char *who, pid_t tid) {
    struct attr a;
    memset(&a, 0xff, sizeof a);
    long r = getattr(tid, &a, sizeof a, 0);
    errno = 0;
    int prio = getpriority(PRIO_PROCESS, tid);
    SAY("%s: getattr %s, size %u, policy %u, flags %llu, nice %d, priority %u; getpriority %d; "
        "getscheduler %d\n",
        who, err(r), a.size, a.policy, (unsigned long long)a.flags, a.nice, a.priority, prio,
        sched_getscheduler(tid));
}

int main(void) {
    pthread_t t;
    pthread_barrier_init(&start, NULL, 2);
    pthread_barrier_init(&done, NULL, 2);
    pthread_create(&t, NULL, worker, NULL);
    pthread_barrier_wait(&start);
    pid_t me = (pid_t)syscall(SYS_gettid);

    /* Nice values only rise, so that an unprivileged run on the host is allowed all of it. */
    struct attr a = {.size = 48, .policy = SCHED_OTHER, .nice = 3};
    SAY("worker nice 3: %s\n", err(setattr(worker_tid, &a, 0)));
    show("worker", worker_tid);
    show("main", me);
    a = (struct attr){.size = 48, .policy = SCHED_BATCH, .nice = 5};
    SAY("worker batch nice 5: %s\n", err(setattr(worker_tid, &a, 0)));
    show("worker", worker_tid);
    a = (struct attr){.size = 48, .policy = SCHED_OTHER, .flags = FLAG_KEEP_POLICY, .nice = 7};
    SAY("worker keep policy, nice 7: %s\n", err(setattr(worker_tid, &a, 0)));
    show("worker", worker_tid);
    /* KEEP_PARAMS keeps the policy as well (Linux sets both in __setscheduler_params). */
    a = (struct attr){.size = 48, .policy = SCHED_IDLE, .flags = FLAG_KEEP_PARAMS, .nice = 9};
    SAY("worker idle nice 9, keep params: %s\n", err(setattr(worker_tid, &a, 0)));
    show("worker", worker_tid);
    show("main", me);

    /* Errors. */
    SAY("NULL attr: %s\n", err(setattr(0, NULL, 0)));
    a = (struct attr){.size = 48};
    SAY("flags 1: %s\n", err(setattr(0, &a, 1)));
    SAY("pid -1: %s\n", err(setattr(-1, &a, 0)));
    a = (struct attr){.size = 40};
    long r = setattr(0, &a, 0);
    SAY("size 40: %s, size written back %u\n", err(r), a.size);
    unsigned char big[128];
    memset(big, 0, sizeof big);
    struct attr *b = (struct attr *)big;
    b->size = sizeof big;
    SAY("size 128, zero tail: %s\n", err(setattr(0, b, 0)));
    big[100] = 1;
    SAY("size 128, nonzero tail: %s\n", err(setattr(0, b, 0)));
    a = (struct attr){.size = 48, .policy = 4};
    SAY("policy 4: %s\n", err(setattr(0, &a, 0)));
    a = (struct attr){.size = 48, .policy = 77};
    SAY("policy 77: %s\n", err(setattr(0, &a, 0)));
    a = (struct attr){.size = 48, .policy = (uint32_t)-1};
    SAY("policy -1: %s\n", err(setattr(0, &a, 0)));
    a = (struct attr){.size = 48, .policy = SCHED_OTHER, .priority = 1};
    SAY("priority 1 for SCHED_OTHER: %s\n", err(setattr(0, &a, 0)));
    a = (struct attr){.size = 48, .policy = SCHED_OTHER, .flags = 1ull << 40};
    SAY("unknown sched_flags: %s\n", err(setattr(0, &a, 0)));
    a = (struct attr){.size = 48};
    SAY("no such pid: %s\n", err(setattr(999999, &a, 0)));
    SAY("getattr NULL: %s\n", err(getattr(0, NULL, 48, 0)));
    SAY("getattr size 47: %s\n", err(getattr(0, &a, 47, 0)));
    SAY("getattr size 4097: %s\n", err(getattr(0, &a, 4097, 0)));
    SAY("getattr flags 1: %s\n", err(getattr(0, &a, 48, 1)));
    SAY("getattr no such pid: %s\n", err(getattr(999999, &a, 48, 0)));
    memset(big, 0xff, sizeof big);
    r = getattr(0, b, sizeof big, 0);
    uint32_t util[2];
    memcpy(util, big + 48, sizeof util);
    SAY("getattr size 128: %s, size %u, util_min %u, util_max %u, byte 100 %d\n", err(r), b->size,
        util[0], util[1], big[100]);
    memset(big, 0xff, sizeof big);
    r = getattr(0, b, 48, 0);
    SAY("getattr size 48: %s, size %u, byte 48 %d\n", err(r), b->size, big[48]);
    /* Last: the caller's own nice, with size 0 (the first version) and a value clamped to 19. */
    a = (struct attr){.size = 0, .policy = SCHED_OTHER, .nice = 40};
    SAY("main size 0, nice 40 (clamped): %s\n", err(setattr(0, &a, 0)));
    show("main", me);

    pthread_barrier_wait(&done);
    pthread_join(t, NULL);
    SAY("done\n");
    return 0;
}
