/* Shared memory across fork (tests/tests/guest_memory.rs): MAP_SHARED|MAP_ANONYMOUS pages written by
 * a child are seen by the parent (pages touched before the fork and pages first touched after it),
 * private ones are not; mprotect keeps them shared; a futex word in shared memory (no
 * FUTEX_PRIVATE_FLAG) wakes a waiter in another process; a process-shared pthread mutex and
 * condition variable ping-pong between parent and child. The host and the guest must print the
 * same lines.
 *
 *   shmem
 */
#define PROG "shmem"
#include "common.h"
#include <pthread.h>
#include <stdint.h>
#include <sys/mman.h>

/* From linux/futex.h (shared, i.e. without FUTEX_PRIVATE_FLAG). */
#define FUTEX_WAIT 0
#define FUTEX_WAKE 1
#define PAGE 4096

static void reap(pid_t pid) {
    int st;
    if (waitpid(pid, &st, 0) != pid || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
        die("child");
}

static long futex(uint32_t *word, int op, uint32_t val, const struct timespec *t) {
    return syscall(SYS_futex, word, op, val, t, NULL, 0);
}

static void shared_and_private(void) {
    char *s = mmap(NULL, 4 * PAGE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    char *p = mmap(NULL, 2 * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (s == MAP_FAILED || p == MAP_FAILED)
        die("mmap");
    s[0] = 'A';
    p[0] = 'a';
    pid_t pid = fork();
    if (pid < 0)
        die("fork");
    if (pid == 0) {
        s[1] = 'B';            /* a page both saw before the fork */
        s[2 * PAGE] = 'C';     /* a page nobody touched before it */
        s[3 * PAGE + 5] = 'D'; /* the last page */
        p[0] = 'x';            /* private: the parent keeps its 'a' */
        p[PAGE] = 'y';
        _exit(0);
    }
    reap(pid);
    printf("shmem: shared after the child wrote: [%c%c] [%c] [%c]\n", s[0], s[1] ? s[1] : '0',
           s[2 * PAGE] ? s[2 * PAGE] : '0', s[3 * PAGE + 5] ? s[3 * PAGE + 5] : '0');
    printf("shmem: private after the child wrote: [%c] [%c]\n", p[0], p[PAGE] ? p[PAGE] : '0');

    /* The parent writes after the fork: a second child sees it. */
    s[PAGE] = 'E';
    pid = fork();
    if (pid == 0)
        _exit(s[PAGE] == 'E' && s[1] == 'B' ? 0 : 3);
    reap(pid);
    printf("shmem: a later child sees the parent's write\n");

    /* Read-only for a while, then writable again: still one page for both. */
    if (mprotect(s, 4 * PAGE, PROT_READ) || mprotect(s, 4 * PAGE, PROT_READ | PROT_WRITE))
        die("mprotect");
    pid = fork();
    if (pid == 0) {
        s[PAGE + 1] = 'F';
        _exit(0);
    }
    reap(pid);
    printf("shmem: after mprotect the child's write shows: [%c]\n", s[PAGE + 1] ? s[PAGE + 1] : '0');

    /* A grandchild writes: the memory is shared across generations. */
    pid = fork();
    if (pid == 0) {
        pid_t g = fork();
        if (g == 0) {
            s[2 * PAGE + 1] = 'G';
            _exit(0);
        }
        reap(g);
        _exit(0);
    }
    reap(pid);
    printf("shmem: a grandchild's write shows: [%c]\n", s[2 * PAGE + 1] ? s[2 * PAGE + 1] : '0');

    /* MADV_DONTNEED keeps shared anonymous contents (and the sharing); MADV_FREE is for private
     * memory only. */
    printf("shmem: madvise DONTNEED %d, then [%c]\n", madvise(s, 4 * PAGE, MADV_DONTNEED), s[0]);
    pid = fork();
    if (pid == 0) {
        s[3] = 'H';
        _exit(0);
    }
    reap(pid);
    printf("shmem: after DONTNEED the child's write shows: [%c]\n", s[3] ? s[3] : '0');
    int r = madvise(s, PAGE, MADV_FREE);
    printf("shmem: madvise FREE on shared memory %d errno %s\n", r, r ? (errno == EINVAL ? "EINVAL" : "other") : "-");
    munmap(s, 4 * PAGE);
    munmap(p, 2 * PAGE);
}

static void shared_futex(void) {
    uint32_t *w = mmap(NULL, PAGE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (w == MAP_FAILED)
        die("mmap");
    pid_t pid = fork();
    if (pid == 0) {
        struct timespec t = {0, 50 * 1000 * 1000};
        nanosleep(&t, NULL);
        __atomic_store_n(w, 1, __ATOMIC_SEQ_CST);
        futex(w, FUTEX_WAKE, 1, NULL);
        _exit(0);
    }
    int timeouts = 0, waits = 0;
    while (__atomic_load_n(w, __ATOMIC_SEQ_CST) == 0) {
        struct timespec t = {10, 0};
        long r = futex(w, FUTEX_WAIT, 0, &t);
        waits++;
        if (r < 0 && errno == ETIMEDOUT)
            timeouts++;
        else if (r < 0 && errno != EAGAIN && errno != EINTR)
            die("futex wait");
        if (waits > 3)
            break;
    }
    reap(pid);
    printf("shmem: futex: word %u, timed out %d times\n", *w, timeouts);

    /* A process-shared mutex and condition variable: 200 turns between parent and child. */
    struct shared {
        pthread_mutex_t m;
        pthread_cond_t c;
        int turn, count;
    } *sh = (void *)(w + 64);
    pthread_mutexattr_t ma;
    pthread_condattr_t ca;
    pthread_mutexattr_init(&ma);
    pthread_mutexattr_setpshared(&ma, PTHREAD_PROCESS_SHARED);
    pthread_condattr_init(&ca);
    pthread_condattr_setpshared(&ca, PTHREAD_PROCESS_SHARED);
    if (pthread_mutex_init(&sh->m, &ma) || pthread_cond_init(&sh->c, &ca))
        die("pthread init");
    const int rounds = 200;
    pid = fork();
    int me = pid == 0;
    for (int i = 0; i < rounds; i++) {
        pthread_mutex_lock(&sh->m);
        while (sh->turn != me)
            pthread_cond_wait(&sh->c, &sh->m);
        sh->count++;
        sh->turn = !me;
        pthread_cond_broadcast(&sh->c);
        pthread_mutex_unlock(&sh->m);
    }
    if (pid == 0)
        _exit(0);
    reap(pid);
    printf("shmem: pthread process-shared: %d turns\n", sh->count);
    munmap(w, PAGE);
}

int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    shared_and_private();
    shared_futex();
    printf("shmem: done\n");
    return 0;
}
