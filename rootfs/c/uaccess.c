/* uaccess: a buffer unmapped by one thread while another thread's system call is copying to or from it
 * (tests/tests/guest_threads.rs, glibc and musl, host and guest). Only what Linux guarantees is
 * printed: the call returns a count or EFAULT (never a crash), the bytes that did arrive are the right
 * ones, and a pipe read that faulted leaves the data in the pipe.
 *   - write(pipe, 256 KiB) blocks on the full pipe; the buffer is unmapped; the reader drains the pipe.
 *   - read(pipe) blocks on the empty pipe; the buffer is unmapped; data is written: EFAULT, the data
 *     stays for the next read.
 *   - 300 rounds of write/read/setsockopt/getsockopt/getsockname on a buffer another thread unmaps
 *     and maps again (the socket calls only where a socket can be made: the guest's default test VM
 *     has no network device). */
#define PROG "uaccess"
#include "common.h"
#include <netinet/in.h>
#include <pthread.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/time.h>
#define BIG (256 * 1024)

static int pfd[2];
static unsigned char *buf;
static volatile pid_t worker_tid;
static long result;
static int result_errno;

static unsigned char pattern(long i) { return (unsigned char)(i * 7 + 3); }

/* Waits (up to 60 s) until thread `tid` sleeps in the kernel ('S' in /proc/self/task/TID/stat). */
static int wait_blocked(pid_t tid) {
    char path[64], st[256];
    snprintf(path, sizeof path, "/proc/self/task/%d/stat", (int)tid);
    for (int i = 0; i < 6000; i++) {
        int fd = open(path, O_RDONLY);
        if (fd >= 0) {
            ssize_t n = read(fd, st, sizeof st - 1);
            close(fd);
            if (n > 0) {
                st[n] = 0;
                char *p = strrchr(st, ')');
                if (p && p[1] == ' ' && p[2] == 'S')
                    return 1;
            }
        }
        sleep_ms(10);
    }
    return 0;
}

static void *writer(void *arg) {
    (void)arg;
    worker_tid = gettid_();
    result = write(pfd[1], buf, BIG);
    result_errno = errno;
    close(pfd[1]);
    return NULL;
}

static void *reader(void *arg) {
    (void)arg;
    worker_tid = gettid_();
    result = read(pfd[0], buf, 4096);
    result_errno = errno;
    return NULL;
}

static unsigned char *map(size_t len) {
    void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
        SAY("mmap failed: %s\n", strerror(errno));
        exit(1);
    }
    return p;
}

static void write_while_unmapped(void) {
    if (pipe(pfd) != 0)
        return;
    buf = map(BIG);
    for (long i = 0; i < BIG; i++)
        buf[i] = pattern(i);
    worker_tid = 0;
    pthread_t t;
    pthread_create(&t, NULL, writer, NULL);
    while (!worker_tid)
        sleep_ms(1);
    SAY("writer blocked on the full pipe: %s\n", wait_blocked(worker_tid) ? "yes" : "no");
    munmap(buf, BIG);
    static unsigned char got[8192];
    long total = 0, bad = 0;
    for (;;) {
        ssize_t n = read(pfd[0], got, sizeof got);
        if (n <= 0)
            break;
        for (ssize_t i = 0; i < n; i++)
            bad += got[i] != pattern(total + i);
        total += n;
    }
    pthread_join(t, NULL);
    /* Linux: the bytes copied before the fault (a count, at least the 64 KiB that filled the pipe),
     * or EFAULT; the reader may see a few bytes more than the count (a partly copied page). */
    if (result > 0)
        SAY("write: a count, %s the pipe's 64 KiB, %s the buffer; reader got at least it: %s\n",
            result >= 65536 ? "at least" : "below", result < BIG ? "less than" : "all of",
            total >= result ? "yes" : "no");
    else
        SAY("write: %s\n", result < 0 && result_errno == EFAULT ? "EFAULT" : "unexpected");
    SAY("bytes read intact: %s\n", bad == 0 ? "yes" : "no");
    close(pfd[0]);
}

static void read_while_unmapped(void) {
    if (pipe(pfd) != 0)
        return;
    buf = map(4096);
    worker_tid = 0;
    pthread_t t;
    pthread_create(&t, NULL, reader, NULL);
    while (!worker_tid)
        sleep_ms(1);
    SAY("reader blocked on the empty pipe: %s\n", wait_blocked(worker_tid) ? "yes" : "no");
    munmap(buf, 4096);
    if (write(pfd[1], "hello", 5) != 5)
        SAY("write failed\n");
    pthread_join(t, NULL);
    SAY("read into the unmapped buffer: %s\n",
        result < 0 && result_errno == EFAULT ? "EFAULT" : result > 0 ? "a count" : "unexpected");
    char again[16] = {0};
    fcntl(pfd[0], F_SETFL, O_NONBLOCK);
    ssize_t n = read(pfd[0], again, sizeof again - 1);
    SAY("the data is still in the pipe: %zd \"%s\"\n", n, n > 0 ? again : "");
    close(pfd[0]);
    close(pfd[1]);
}

static volatile int stop;
static unsigned char *volatile racy;

static void *remapper(void *arg) {
    (void)arg;
    while (!stop) {
        munmap(racy, 4096);
        sched_yield();
        void *p = mmap(racy, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1,
                       0);
        if (p == MAP_FAILED)
            break;
        sched_yield();
    }
    return NULL;
}

static void calls_in_a_loop(void) {
    racy = map(4096);
    int s = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET};
    bind(s, (struct sockaddr *)&a, sizeof a);
    if (pipe(pfd) != 0)
        return;
    fcntl(pfd[0], F_SETFL, O_NONBLOCK);
    fcntl(pfd[1], F_SETFL, O_NONBLOCK);
    pthread_t t;
    stop = 0;
    pthread_create(&t, NULL, remapper, NULL);
    long ok = 0, efault = 0, other = 0;
    for (int i = 0; i < 300; i++) {
        long r[5];
        int e[5];
        memset(e, 0, sizeof e);
        errno = 0;
        r[0] = write(pfd[1], racy, 512), e[0] = errno, errno = 0;
        r[1] = read(pfd[0], racy + 1024, 512), e[1] = errno, errno = 0;
        if (s < 0) {
            /* No network device (the guest's default test VM): sockets are EAFNOSUPPORT there. */
            r[2] = r[3] = r[4] = 0;
            goto tally;
        }
        struct timeval *tv = (struct timeval *)(racy + 2048);
        r[2] = getsockopt(s, SOL_SOCKET, SO_RCVTIMEO, tv, &(socklen_t){sizeof *tv}), e[2] = errno;
        errno = 0;
        r[3] = setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, tv, sizeof *tv), e[3] = errno, errno = 0;
        socklen_t *len = (socklen_t *)(racy + 3072);
        r[4] = syscall(SYS_getsockname, s, racy + 3080, len), e[4] = errno;
    tally:
        for (int k = 0; k < 5; k++) {
            if (r[k] >= 0)
                ok++;
            else if (e[k] == EFAULT)
                efault++;
            else if (!(k == 1 && e[k] == EAGAIN) && !(k == 3 && e[k] == EDOM) &&
                     !(k == 4 && e[k] == EINVAL)) {
                if (!other)
                    printf("note: call %d returned %ld errno %d\n", k, r[k], e[k]);
                other++;
            }
        }
    }
    stop = 1;
    pthread_join(t, NULL);
    SAY("1500 calls on a buffer being unmapped: %s\n",
        other == 0 && ok + efault > 0 ? "each a result or EFAULT" : "other errors");
    close(s);
    close(pfd[0]);
    close(pfd[1]);
}

int main(void) {
    write_while_unmapped();
    read_while_unmapped();
    calls_in_a_loop();
    SAY("done\n");
    return 0;
}
