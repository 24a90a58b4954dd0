/* epoll: epoll_create1, epoll_ctl, epoll_wait and epoll_pwait on a pipe, the console and sockets,
 * printed so that the output can be compared between the host and the guest kernel
 * (tests/tests/guest_busybox.rs, glibc and musl). Cases: level-triggered reports while data is
 * queued, EPOLLHUP alone once the writer is gone, EPOLLOUT on a write end and EPOLLERR without
 * readers; edge-triggered reports only new data; EPOLLONESHOT until EPOLL_CTL_MOD; a wait woken by
 * a child's write and by a child's exit through a pipe, and one that times out; the console's stdout
 * (writable) and stdin (nothing typed); a UDP socket (writable, nothing to read) and a listening TCP
 * socket (no connection); epoll_pwait with a signal mask; an epoll descriptor in poll(2); the errors
 * (EEXIST, ENOENT, EINVAL, EPERM, ELOOP, EBADF). */
#define PROG "epoll"
#include "common.h"
#include <netinet/in.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/socket.h>

static long now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

/* One epoll_wait, printed as "n [events:data ...]", the events in data order (the order of the ready
 * list is not part of the interface: Linux's follows the wake-ups). */
static void wait_and_say(const char *what, int ep, int timeout) {
    struct epoll_event ev[8];
    int n = epoll_wait(ep, ev, 8, timeout);
    for (int i = 1; i < n; i++)
        for (int j = i; j > 0 && ev[j - 1].data.u64 > ev[j].data.u64; j--) {
            struct epoll_event t = ev[j];
            ev[j] = ev[j - 1];
            ev[j - 1] = t;
        }
    char line[256];
    int at = snprintf(line, sizeof line, "%s", err(n));
    for (int i = 0; i < n; i++)
        at += snprintf(line + at, sizeof line - at, " %#x:%llu", ev[i].events, (unsigned long long)ev[i].data.u64);
    SAY("%s: %s\n", what, line);
}

static int add(int ep, int fd, unsigned events, unsigned long long data) {
    struct epoll_event e = {.events = events, .data.u64 = data};
    return epoll_ctl(ep, EPOLL_CTL_ADD, fd, &e);
}

static void level_triggered(void) {
    int ep = epoll_create1(EPOLL_CLOEXEC), p[2];
    pipe(p);
    SAY("add read end: %s\n", err(add(ep, p[0], EPOLLIN, 11)));
    SAY("add write end: %s\n", err(add(ep, p[1], EPOLLOUT, 12)));
    wait_and_say("empty pipe", ep, 0);
    write(p[1], "abc", 3);
    wait_and_say("3 bytes queued", ep, 0);
    wait_and_say("still queued (level)", ep, 0);
    char buf[8];
    read(p[0], buf, sizeof buf);
    wait_and_say("read all", ep, 0);
    close(p[1]);
    wait_and_say("writer gone", ep, 0);
    close(p[0]);
    wait_and_say("both closed", ep, 0);
    pipe(p);
    add(ep, p[1], EPOLLOUT, 13);
    close(p[0]);
    wait_and_say("reader gone", ep, 0);
    close(p[1]);
    close(ep);
}

static void edge_and_oneshot(void) {
    int ep = epoll_create1(0), p[2], q[2];
    pipe(p);
    pipe(q);
    add(ep, p[0], EPOLLIN | EPOLLET, 21);
    add(ep, q[0], EPOLLIN | EPOLLONESHOT, 22);
    write(p[1], "a", 1);
    wait_and_say("edge: new byte", ep, 0);
    wait_and_say("edge: nothing new", ep, 0);
    write(p[1], "b", 1);
    wait_and_say("edge: another byte", ep, 0);
    write(q[1], "x", 1);
    wait_and_say("oneshot: fires", ep, 0);
    wait_and_say("oneshot: disarmed", ep, 0);
    struct epoll_event e = {.events = EPOLLIN | EPOLLONESHOT, .data.u64 = 23};
    SAY("oneshot: rearm %s\n", err(epoll_ctl(ep, EPOLL_CTL_MOD, q[0], &e)));
    wait_and_say("oneshot: fires again", ep, 0);
    close(p[0]), close(p[1]), close(q[0]), close(q[1]);
    wait_and_say("closed descriptors leave the set", ep, 0);
    close(ep);
}

static void woken_by_children(void) {
    int ep = epoll_create1(0), p[2];
    pipe(p);
    add(ep, p[0], EPOLLIN, 31);
    pid_t c = fork();
    if (c == 0) {
        sleep_ms(100);
        write(p[1], "z", 1);
        sleep_ms(100);
        _exit(0);
    }
    close(p[1]);
    wait_and_say("a child writes", ep, -1);
    char b;
    read(p[0], &b, 1);
    wait_and_say("the child exits (its write end closes)", ep, -1);
    waitpid(c, NULL, 0);
    close(p[0]);
    pipe(p);
    add(ep, p[0], EPOLLIN, 32);
    long t0 = now_ms();
    wait_and_say("nothing for 150 ms", ep, 150);
    SAY("waited at least 150 ms: %s\n", now_ms() - t0 >= 150 ? "yes" : "no");
    close(p[0]), close(p[1]), close(ep);
}

static void console_and_sockets(void) {
    int ep = epoll_create1(0);
    add(ep, 1, EPOLLOUT, 41);
    wait_and_say("stdout writable", ep, 0);
    epoll_ctl(ep, EPOLL_CTL_DEL, 1, NULL);
    add(ep, 0, EPOLLIN, 42);
    wait_and_say("stdin: nothing typed", ep, 0);
    epoll_ctl(ep, EPOLL_CTL_DEL, 0, NULL);
    int u = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(40123)};
    SAY("udp bind: %s\n", err(bind(u, (struct sockaddr *)&a, sizeof a)));
    add(ep, u, EPOLLIN | EPOLLOUT, 43);
    wait_and_say("udp socket", ep, 0);
    epoll_ctl(ep, EPOLL_CTL_DEL, u, NULL);
    add(ep, u, EPOLLIN, 44);
    wait_and_say("udp socket, input only", ep, 0);
    int l = socket(AF_INET, SOCK_STREAM, 0);
    a.sin_port = htons(40124);
    bind(l, (struct sockaddr *)&a, sizeof a);
    SAY("tcp listen: %s\n", err(listen(l, 4)));
    add(ep, l, EPOLLIN, 45);
    wait_and_say("listening socket, no connection", ep, 0);
    close(u), close(l), close(ep);
}

static volatile sig_atomic_t got;
static void on_usr1(int sig) { got = sig; }

static void pwait_and_poll(void) {
    int ep = epoll_create1(0), p[2];
    pipe(p);
    add(ep, p[0], EPOLLIN, 51);
    struct sigaction sa = {.sa_handler = on_usr1};
    sigaction(SIGUSR1, &sa, NULL);
    sigset_t block, old;
    sigemptyset(&block);
    sigaddset(&block, SIGUSR1);
    sigprocmask(SIG_BLOCK, &block, &old);
    pid_t c = fork();
    if (c == 0) {
        sleep_ms(100);
        kill(getppid(), SIGUSR1);
        _exit(0);
    }
    /* SIGUSR1 is blocked outside the call and let through inside it: EINTR, the handler ran. */
    struct epoll_event ev;
    sigset_t none;
    sigemptyset(&none);
    int n = epoll_pwait(ep, &ev, 1, 5000, &none);
    SAY("epoll_pwait with SIGUSR1 let in: %s, handler ran: %s\n", err(n), got == SIGUSR1 ? "yes" : "no");
    sigset_t now;
    sigprocmask(SIG_SETMASK, NULL, &now);
    SAY("mask restored: %s\n", sigismember(&now, SIGUSR1) ? "yes" : "no");
    waitpid(c, NULL, 0);
    sigprocmask(SIG_SETMASK, &old, NULL);
    struct pollfd pf = {.fd = ep, .events = POLLIN};
    int r = poll(&pf, 1, 0);
    SAY("poll on the epoll descriptor, empty: %s revents %#x\n", err(r), pf.revents);
    write(p[1], "q", 1);
    r = poll(&pf, 1, 0);
    SAY("poll on the epoll descriptor, ready: %s revents %#x\n", err(r), pf.revents);
    close(p[0]), close(p[1]), close(ep);
}

static void errors(void) {
    int ep = epoll_create1(0), p[2];
    pipe(p);
    SAY("epoll_create1(bad flag): %s\n", err(epoll_create1(1)));
    SAY("add: %s\n", err(add(ep, p[0], EPOLLIN, 1)));
    SAY("add again: %s\n", err(add(ep, p[0], EPOLLIN, 1)));
    struct epoll_event e = {.events = EPOLLIN};
    SAY("mod unknown: %s\n", err(epoll_ctl(ep, EPOLL_CTL_MOD, p[1], &e)));
    SAY("del unknown: %s\n", err(epoll_ctl(ep, EPOLL_CTL_DEL, p[1], NULL)));
    SAY("add itself: %s\n", err(add(ep, ep, EPOLLIN, 1)));
    int f = open("/proc/self/stat", O_RDONLY);
    if (f < 0)
        f = open("/etc/passwd", O_RDONLY);
    SAY("add a regular file: %s\n", err(add(ep, f, EPOLLIN, 1)));
    int ep2 = epoll_create1(0);
    SAY("nest: %s\n", err(add(ep2, ep, EPOLLIN, 1)));
    SAY("loop: %s\n", err(add(ep, ep2, EPOLLIN, 1)));
    SAY("bad op: %s\n", err(epoll_ctl(ep, 99, p[1], &e)));
    struct epoll_event ev;
    SAY("maxevents 0: %s\n", err(epoll_wait(ep, &ev, 0, 0)));
    SAY("not an epoll fd: %s\n", err(epoll_wait(p[0], &ev, 1, 0)));
    close(99); /* (an fd inherited on the host would change the answer) */
    SAY("closed fd: %s\n", err(epoll_wait(99, &ev, 1, 0)));
    close(f), close(p[0]), close(p[1]), close(ep), close(ep2);
}

int main(void) {
    level_triggered();
    edge_and_oneshot();
    woken_by_children();
    console_and_sockets();
    pwait_and_poll();
    errors();
    SAY("done\n");
    return 0;
}
