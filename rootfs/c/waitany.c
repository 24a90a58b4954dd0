/* waitany: poll, select, pselect6 and ppoll on pipes, woken by a child's write, by a child's exit
 * (its end of a pipe closing) and by a timeout; POLLHUP without POLLIN once the writers are gone and
 * the pipe is empty; select's remaining time; a signal interrupting pselect/ppoll only when their
 * mask lets it through; FIONREAD; readv/writev; dup3; sendfile from a file to a pipe; pread; and
 * clock_settime's errors. Printed so that the output can be compared between the host and the
 * guest kernel (tests/tests/guest_busybox.rs, glibc and musl). */
#define PROG "waitany"
#include "common.h"
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/select.h>
#include <sys/sendfile.h>
#include <sys/uio.h>

static long ms_since(const struct timespec *t0) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (t.tv_sec - t0->tv_sec) * 1000 + (t.tv_nsec - t0->tv_nsec) / 1000000;
}

/* The names of the bits in `e` (in one of four buffers: a printf may show several). */
static const char *events(short e) {
    static char bufs[4][64];
    static int next;
    char *buf = bufs[next++ % 4];
    buf[0] = 0;
    if (e & POLLIN)
        strcat(buf, "IN ");
    if (e & POLLOUT)
        strcat(buf, "OUT ");
    if (e & POLLHUP)
        strcat(buf, "HUP ");
    if (e & POLLERR)
        strcat(buf, "ERR ");
    if (e & POLLNVAL)
        strcat(buf, "NVAL ");
    if (!buf[0])
        strcpy(buf, "none ");
    buf[strlen(buf) - 1] = 0;
    return buf;
}

/* A child that sleeps `ms` and then writes one byte to `fd` (if `fd` >= 0) and exits. */
static pid_t later(int ms, int fd, int close_fd) {
    pid_t c = fork();
    if (c == 0) {
        if (close_fd >= 0)
            close(close_fd);
        usleep(ms * 1000);
        if (fd >= 0)
            write(fd, "x", 1);
        _exit(0);
    }
    return c;
}

static void on_usr1(int sig) { (void)sig; }

static void polls(void) {
    int p[2];
    pipe(p);
    struct pollfd fds[2] = {{.fd = p[0], .events = POLLIN}, {.fd = p[1], .events = POLLOUT}};
    /* (The call first: the order a function's arguments are evaluated in is unspecified.) */
    int r = poll(fds, 2, 0);
    SAY("poll empty pipe: %s, read end %s, write end %s\n", err(r), events(fds[0].revents),
        events(fds[1].revents));
    write(p[1], "ab", 2);
    int n = -1;
    ioctl(p[0], FIONREAD, &n);
    SAY("FIONREAD after writing 2: %d\n", n);
    r = poll(fds, 1, 0);
    SAY("poll with data: %s, read end %s\n", err(r), events(fds[0].revents));
    char b[8];
    read(p[0], b, 2);
    /* Woken by a child's write. */
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    pid_t c = later(100, p[1], -1);
    r = poll(fds, 1, 5000);
    long ms = ms_since(&t0);
    SAY("poll woken by a child's write: %s %s, after 100 ms or more: %s\n", err(r), events(fds[0].revents),
        ms >= 90 && ms < 4000 ? "yes" : "no");
    read(p[0], b, 1);
    waitpid(c, NULL, 0);
    /* Woken by the last writer's exit: POLLHUP alone on an empty pipe. */
    close(p[1]);
    int q[2];
    pipe(q);
    c = later(100, -1, q[0]);
    close(q[1]);
    struct pollfd hup = {.fd = q[0], .events = POLLIN};
    r = poll(&hup, 1, 5000);
    SAY("poll woken by the writer's exit: %s %s\n", err(r), events(hup.revents));
    waitpid(c, NULL, 0);
    int w[2];
    pipe(w);
    close(w[0]);
    struct pollfd wfd = {.fd = w[1], .events = POLLOUT};
    r = poll(&wfd, 1, 0);
    SAY("poll on the write end of a pipe without readers: %s %s\n", err(r), events(wfd.revents));
    /* A timeout (an empty pipe whose writer is open), and a closed descriptor (POLLNVAL). */
    int e[2];
    pipe(e);
    clock_gettime(CLOCK_MONOTONIC, &t0);
    struct pollfd none = {.fd = e[0], .events = POLLIN};
    r = poll(&none, 1, 50);
    ms = ms_since(&t0);
    SAY("poll timeout 50 ms: %s, waited 50 ms or more: %s\n", err(r), ms >= 45 ? "yes" : "no");
    close(999); /* (closed here too: whatever ran this program may have left it open) */
    struct pollfd bad = {.fd = 999, .events = POLLIN};
    r = poll(&bad, 1, 0);
    SAY("poll on a closed descriptor: %s %s\n", err(r), events(bad.revents));
    struct pollfd neg = {.fd = -1, .events = POLLIN, .revents = 7};
    r = poll(&neg, 1, 0);
    SAY("poll on fd -1: %s revents %d\n", err(r), neg.revents);
    close(e[0]);
    close(e[1]);
    close(p[0]);
    close(q[0]);
    close(w[1]);
}

static void selects(void) {
    int p[2];
    pipe(p);
    fd_set rd, wr;
    FD_ZERO(&rd);
    FD_ZERO(&wr);
    FD_SET(p[0], &rd);
    FD_SET(p[1], &wr);
    struct timeval tv = {0, 0};
    int r = select(p[1] + 1, &rd, &wr, NULL, &tv);
    SAY("select empty pipe: %s, readable %d, writable %d\n", err(r), FD_ISSET(p[0], &rd), FD_ISSET(p[1], &wr));
    /* Woken by a child's write; Linux writes the time left back. */
    pid_t c = later(100, p[1], -1);
    FD_ZERO(&rd);
    FD_SET(p[0], &rd);
    tv.tv_sec = 5;
    tv.tv_usec = 0;
    r = select(p[0] + 1, &rd, NULL, NULL, &tv);
    SAY("select woken by a child's write: %s, readable %d, time left under 5 s and over 1 s: %s\n", err(r),
        FD_ISSET(p[0], &rd), tv.tv_sec < 5 && tv.tv_sec >= 1 ? "yes" : "no");
    char b;
    read(p[0], &b, 1);
    waitpid(c, NULL, 0);
    /* A timeout: nothing set, the time left 0. */
    FD_ZERO(&rd);
    FD_SET(p[0], &rd);
    tv.tv_sec = 0;
    tv.tv_usec = 50000;
    r = select(p[0] + 1, &rd, NULL, NULL, &tv);
    SAY("select timeout: %s, readable %d, time left %ld.%06ld\n", err(r), FD_ISSET(p[0], &rd), (long)tv.tv_sec,
        (long)tv.tv_usec);
    /* The writer gone: readable (read gives 0). */
    close(p[1]);
    FD_ZERO(&rd);
    FD_SET(p[0], &rd);
    tv.tv_sec = 0;
    tv.tv_usec = 0;
    r = select(p[0] + 1, &rd, NULL, NULL, &tv);
    SAY("select after the writer closed: %s, readable %d\n", err(r), FD_ISSET(p[0], &rd));
    FD_ZERO(&rd);
    /* A descriptor that was just open and is now closed. It must be a low one: Linux's select ignores
     * descriptors past the end of the process's fd table (64 slots until a higher fd is opened), so a
     * closed fd 200 gives EBADF or 0 depending on what the process once had open. */
    int closed = dup(p[0]);
    close(closed);
    FD_SET(closed, &rd);
    SAY("select on a closed descriptor: %s\n", err(select(closed + 1, &rd, NULL, NULL, &tv)));
    tv.tv_usec = 2000000;
    SAY("select with tv_usec 2000000: %s\n", err(select(0, NULL, NULL, NULL, &tv)));
    SAY("select with nfds -1: %s\n", err(select(-1, NULL, NULL, NULL, NULL)));
    close(p[0]);
}

/* A child that sends SIGUSR1 to `me` after 100 ms. */
static pid_t usr1_later(pid_t me) {
    pid_t c = fork();
    if (c == 0) {
        usleep(100000);
        kill(me, SIGUSR1);
        _exit(0);
    }
    return c;
}

/* Says whether SIGUSR1 is pending (blocked), and takes it if so. */
static void report_usr1_pending(const sigset_t *usr1) {
    sigset_t pend;
    sigpending(&pend);
    SAY("  SIGUSR1 pending after it: %d\n", sigismember(&pend, SIGUSR1));
    if (sigismember(&pend, SIGUSR1)) {
        int s;
        sigwait(usr1, &s);
    }
}

/* pselect6/ppoll with a signal: blocked outside, let through by the call's mask (EINTR), or kept
 * blocked by it (the call times out, the signal stays pending). */
static void masks(void) {
    struct sigaction sa = {.sa_handler = on_usr1};
    sigaction(SIGUSR1, &sa, NULL);
    sigset_t usr1, old, empty;
    sigemptyset(&usr1);
    sigaddset(&usr1, SIGUSR1);
    sigemptyset(&empty);
    sigprocmask(SIG_BLOCK, &usr1, &old);
    int p[2];
    pipe(p);
    pid_t me = getpid();
    for (int round = 0; round < 2; round++) {
        pid_t c = usr1_later(me);
        struct timespec ts = {0, 500000000};
        fd_set rd;
        FD_ZERO(&rd);
        FD_SET(p[0], &rd);
        int r = round == 0 ? pselect(p[0] + 1, &rd, NULL, NULL, &ts, &empty)
                           : pselect(p[0] + 1, &rd, NULL, NULL, &ts, &usr1);
        SAY("pselect, SIGUSR1 %s by its mask: %s\n", round == 0 ? "let through" : "blocked", err(r));
        waitpid(c, NULL, 0);
        report_usr1_pending(&usr1);
    }
    for (int round = 0; round < 2; round++) {
        pid_t c = usr1_later(me);
        struct timespec ts = {0, 500000000};
        struct pollfd fd = {.fd = p[0], .events = POLLIN};
        int r = ppoll(&fd, 1, &ts, round == 0 ? &empty : &usr1);
        SAY("ppoll, SIGUSR1 %s by its mask: %s\n", round == 0 ? "let through" : "blocked", err(r));
        waitpid(c, NULL, 0);
        report_usr1_pending(&usr1);
    }
    struct timespec bad = {0, 1000000000};
    struct pollfd fd = {.fd = p[0], .events = POLLIN};
    SAY("ppoll with tv_nsec 1e9: %s\n", err(ppoll(&fd, 1, &bad, NULL)));
    sigprocmask(SIG_SETMASK, &old, NULL);
    close(p[0]);
    close(p[1]);
}

static void files(void) {
    /* readv/writev through a pipe. */
    int p[2];
    pipe(p);
    struct iovec out[3] = {{"one ", 4}, {"", 0}, {"two", 3}};
    SAY("writev 3 buffers: %s\n", err(writev(p[1], out, 3)));
    char a[2], b[16] = {0};
    struct iovec in[2] = {{a, 2}, {b, sizeof b - 1}};
    ssize_t n = readv(p[0], in, 2);
    SAY("readv: %s '%.2s' '%s'\n", err(n), a, b);
    struct iovec badv = {(void *)16, 4};
    SAY("writev from a bad address: %s\n", err(writev(p[1], &badv, 1)));
    /* dup3. */
    int d = dup3(p[0], 40, O_CLOEXEC);
    SAY("dup3 with O_CLOEXEC: %s, FD_CLOEXEC %d\n", err(d), fcntl(40, F_GETFD) & FD_CLOEXEC);
    SAY("dup3 onto itself: %s\n", err(dup3(p[0], p[0], 0)));
    /* (musl's dup3 drops flags other than O_CLOEXEC itself: the system call.) */
    SAY("dup3 with a bad flag: %s\n", err(syscall(SYS_dup3, p[0], 41, O_NONBLOCK)));
    close(40);
    /* sendfile from a file (this program's own first bytes) to the pipe, with and without an
     * offset; pread at an offset leaves the file offset alone. */
    int f = open("/proc/self/exe", O_RDONLY);
    char elf[4] = {0};
    off_t off = 1;
    n = sendfile(p[1], f, &off, 3);
    if (n > 0) /* (a read of the empty pipe would wait forever) */
        read(p[0], elf, n);
    SAY("sendfile 3 bytes from offset 1: %s '%.3s', offset now %ld, file offset %ld\n", err(n), elf, (long)off,
        (long)lseek(f, 0, SEEK_CUR));
    n = sendfile(p[1], f, NULL, 4);
    if (n > 0)
        read(p[0], elf, n);
    SAY("sendfile 4 bytes at the file offset: %s '%.3s', file offset %ld\n", err(n), elf + 1,
        (long)lseek(f, 0, SEEK_CUR));
    char two[2];
    n = pread(f, two, 2, 2);
    SAY("pread 2 at 2: %s '%.2s', file offset %ld\n", err(n), two, (long)lseek(f, 0, SEEK_CUR));
    SAY("sendfile to a read-only descriptor: %s\n", err(sendfile(f, f, NULL, 1)));
    close(f);
    close(p[0]);
    close(p[1]);
}

static void clocks(void) {
    /* Only the errors: setting the host's clock is not this test's business. */
    struct timespec ts = {0, 1000000000};
    SAY("clock_settime with tv_nsec 1e9: %s\n", err(clock_settime(CLOCK_REALTIME, &ts)));
    ts.tv_nsec = 0;
    SAY("clock_settime of CLOCK_MONOTONIC: %s\n", err(clock_settime(CLOCK_MONOTONIC, &ts)));
    ts.tv_sec = -1;
    SAY("clock_settime to before the epoch: %s\n", err(clock_settime(CLOCK_REALTIME, &ts)));
    SAY("clock_settime from a bad address: %s\n", err(syscall(SYS_clock_settime, CLOCK_REALTIME, (void *)16)));
}

int main(void) {
    polls();
    selects();
    masks();
    files();
    clocks();
    SAY("done\n");
    return 0;
}
