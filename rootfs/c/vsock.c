/* vsock: AF_VSOCK stream sockets, for the guest kernel and for a Linux host with vhost_vsock.
 *
 *   vsock server PORT [--count N]   echo server: every connection gets back what it sends (one poll
 *                                   loop, up to 64 connections at once); prints each accept with both
 *                                   addresses; exits after N connections ended (default: never)
 *   vsock client CID PORT [--timeout S]
 *                                   nc: stdin to the connection, the connection to stdout; half-close
 *                                   at stdin's end, exit at the connection's end
 *   vsock send CID PORT MIB         connect, send MIB MiB of pseudo-random bytes, shut down writing,
 *                                   print "sent N bytes crc C in T ms", then the peer's answer line
 *   vsock recv PORT [--timeout S]   accept one connection, read to its end, print
 *                                   "received N bytes crc C in T ms" and send the same line back
 *   vsock noread PORT               accept one connection, print "accepted", then never read
 *   vsock connect CID PORT [--nonblock poll|epoll]
 *                                   connect and report the outcome (errno name) without sending; with
 *                                   --nonblock: a non-blocking connect (EINPROGRESS), then one wait in
 *                                   poll or epoll_wait (30 s at most) for POLLOUT, and the events, the
 *                                   time waited and SO_ERROR
 *
 * CID 2 is the host (VMADDR_CID_HOST), -1 any. CRC-32 is the IEEE one (zlib's crc32). */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#ifndef AF_VSOCK
#define AF_VSOCK 40
#endif
/* Linux's struct sockaddr_vm (linux/vm_sockets.h), spelled out: musl's headers lack it. */
struct sockaddr_vm_ {
    unsigned short svm_family;
    unsigned short svm_reserved1;
    unsigned int svm_port;
    unsigned int svm_cid;
    unsigned char svm_flags;
    unsigned char svm_zero[3];
};

static uint32_t crc_table[256];

static void crc_init(void) {
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++)
            c = c & 1 ? 0xedb88320u ^ (c >> 1) : c >> 1;
        crc_table[i] = c;
    }
}

static uint32_t crc32_update(uint32_t crc, const unsigned char *p, size_t n) {
    crc = ~crc;
    while (n--)
        crc = crc_table[(crc ^ *p++) & 0xff] ^ (crc >> 8);
    return ~crc;
}

static long long now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (long long)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

static const char *ename(int e) {
    switch (e) {
    case ECONNRESET: return "ECONNRESET";
    case ECONNREFUSED: return "ECONNREFUSED";
    case ETIMEDOUT: return "ETIMEDOUT";
    case EAGAIN: return "EAGAIN";
    case ENODEV: return "ENODEV";
    case EADDRINUSE: return "EADDRINUSE";
    case EPIPE: return "EPIPE";
    case ENOTCONN: return "ENOTCONN";
    default: return strerror(e);
    }
}

static void die(const char *what) {
    int e = errno;
    printf("vsock: %s: %s (errno %d)\n", what, ename(e), e);
    fflush(stdout);
    exit(1);
}

static struct sockaddr_vm_ addr(long cid, long port) {
    struct sockaddr_vm_ a;
    memset(&a, 0, sizeof a);
    a.svm_family = AF_VSOCK;
    a.svm_cid = (unsigned int)cid;
    a.svm_port = (unsigned int)port;
    return a;
}

static void set_timeout(int fd, int secs) {
    struct timeval tv = {secs, 0};
    if (secs > 0 && setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) < 0)
        die("setsockopt");
}

static int listener(long port) {
    int fd = socket(AF_VSOCK, SOCK_STREAM, 0);
    if (fd < 0)
        die("socket");
    struct sockaddr_vm_ a = addr(-1, port);
    if (bind(fd, (struct sockaddr *)&a, sizeof a) < 0)
        die("bind");
    if (listen(fd, 64) < 0)
        die("listen");
    printf("vsock: listening on port %ld\n", port);
    fflush(stdout);
    return fd;
}

static int accept_one(int lfd) {
    struct sockaddr_vm_ peer, local;
    socklen_t n = sizeof peer, m = sizeof local;
    int fd = accept4(lfd, (struct sockaddr *)&peer, &n, SOCK_CLOEXEC);
    if (fd < 0)
        die("accept");
    if (getsockname(fd, (struct sockaddr *)&local, &m) < 0)
        die("getsockname");
    struct sockaddr_vm_ p2;
    socklen_t n2 = sizeof p2;
    if (getpeername(fd, (struct sockaddr *)&p2, &n2) < 0 || p2.svm_port != peer.svm_port)
        die("getpeername");
    printf("vsock: accepted cid %u port %u on cid %u port %u\n", peer.svm_cid, peer.svm_port,
           local.svm_cid, local.svm_port);
    fflush(stdout);
    return fd;
}

static int connect_to(long cid, long port) {
    int fd = socket(AF_VSOCK, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        die("socket");
    struct sockaddr_vm_ a = addr(cid, port);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) < 0)
        die("connect");
    return fd;
}

static int write_all(int fd, const void *buf, size_t n) {
    const char *p = buf;
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

#define MAXC 64

static int server(long port, long count) {
    int lfd = listener(port);
    struct pollfd fds[MAXC + 1];
    int n = 0;
    long ended = 0;
    static char buf[65536];
    for (;;) {
        fds[0].fd = lfd;
        fds[0].events = n < MAXC ? POLLIN : 0;
        for (int i = 1; i <= n; i++)
            fds[i].events = POLLIN;
        if (poll(fds, (nfds_t)n + 1, -1) < 0) {
            if (errno == EINTR)
                continue;
            die("poll");
        }
        for (int i = 1; i <= n; i++) {
            if (!fds[i].revents)
                continue;
            ssize_t r = read(fds[i].fd, buf, sizeof buf);
            if (r > 0 && write_all(fds[i].fd, buf, (size_t)r) == 0)
                continue;
            if (r < 0 && (errno == EINTR || errno == EAGAIN))
                continue;
            close(fds[i].fd);
            fds[i--] = fds[n--];
            ended++;
            if (count > 0 && ended >= count) {
                printf("vsock: %ld connections served\n", ended);
                return 0;
            }
        }
        if (fds[0].revents & POLLIN) {
            fds[n + 1].fd = accept_one(lfd);
            fds[n + 1].revents = 0;
            n++;
        }
    }
}

static int client(long cid, long port, int timeout) {
    int fd = connect_to(cid, port);
    set_timeout(fd, timeout);
    struct pollfd p[2] = {{0, POLLIN, 0}, {fd, POLLIN, 0}};
    static char buf[65536];
    int in_open = 1;
    for (;;) {
        if (poll(p, 2, -1) < 0) {
            if (errno == EINTR)
                continue;
            die("poll");
        }
        if (in_open && p[0].revents) {
            ssize_t r = read(0, buf, sizeof buf);
            if (r <= 0) {
                in_open = 0;
                p[0].fd = -1;
                shutdown(fd, SHUT_WR);
            } else if (write_all(fd, buf, (size_t)r) < 0) {
                die("write");
            }
        }
        if (p[1].revents) {
            ssize_t r = read(fd, buf, sizeof buf);
            if (r < 0)
                die("read");
            if (r == 0)
                return 0;
            if (write_all(1, buf, (size_t)r) < 0)
                return 1;
        }
    }
}

static int sender(long cid, long port, long mib) {
    int fd = connect_to(cid, port);
    static unsigned char buf[65536];
    uint64_t x = 0x9e3779b97f4a7c15ull;
    uint32_t crc = 0;
    long long total = mib << 20, t0 = now_ms();
    for (long long done = 0; done < total; done += (long long)sizeof buf) {
        for (size_t i = 0; i < sizeof buf; i += 8) {
            x ^= x << 13, x ^= x >> 7, x ^= x << 17;
            memcpy(buf + i, &x, 8);
        }
        crc = crc32_update(crc, buf, sizeof buf);
        if (write_all(fd, buf, sizeof buf) < 0)
            die("write");
    }
    shutdown(fd, SHUT_WR);
    printf("vsock: sent %lld bytes crc %08x in %lld ms\n", total, crc, now_ms() - t0);
    fflush(stdout);
    char line[128];
    ssize_t r = read(fd, line, sizeof line - 1);
    if (r > 0) {
        line[r] = 0;
        printf("vsock: peer: %s", line);
    }
    return 0;
}

static int receiver(long port, int timeout) {
    int lfd = listener(port);
    int fd = accept_one(lfd);
    set_timeout(fd, timeout);
    static unsigned char buf[65536];
    uint32_t crc = 0;
    long long total = 0, t0 = now_ms();
    for (;;) {
        ssize_t r = read(fd, buf, sizeof buf);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            die("read");
        if (r == 0)
            break;
        crc = crc32_update(crc, buf, (size_t)r);
        total += r;
    }
    char line[128];
    int n = snprintf(line, sizeof line, "received %lld bytes crc %08x in %lld ms\n", total, crc,
                     now_ms() - t0);
    printf("vsock: %s", line);
    fflush(stdout);
    write_all(fd, line, (size_t)n);
    close(fd);
    return 0;
}

/* Names of the poll bits set in `ev` (EPOLL* and POLL* have the same values for these). */
static void poll_names(unsigned ev, char *out, size_t n) {
    static const struct { unsigned bit; const char *name; } bits[] = {
        {POLLIN, "POLLIN"}, {POLLOUT, "POLLOUT"}, {POLLERR, "POLLERR"}, {POLLHUP, "POLLHUP"},
    };
    out[0] = 0;
    for (size_t i = 0; i < sizeof bits / sizeof bits[0]; i++)
        if (ev & bits[i].bit)
            snprintf(out + strlen(out), n - strlen(out), "%s%s", out[0] ? "|" : "", bits[i].name);
    if (!out[0])
        snprintf(out, n, "none");
}

/* A non-blocking connect waited for in poll or epoll, as event loops do: prints
 * "vsock: nonblocking connect: EVENTS after T ms, SO_ERROR NAME". */
static int connect_nonblocking(long cid, long port, const char *how) {
    int fd = socket(AF_VSOCK, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        die("socket");
    struct sockaddr_vm_ a = addr(cid, port);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) == 0) {
        printf("vsock: nonblocking connect: connected at once\n");
        return 0;
    }
    if (errno != EINPROGRESS)
        die("connect");
    long long t0 = now_ms();
    unsigned ev = 0;
    if (!strcmp(how, "epoll")) {
        int ep = epoll_create1(EPOLL_CLOEXEC);
        struct epoll_event e = {.events = EPOLLOUT, .data.fd = fd}, got;
        if (ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, fd, &e) < 0)
            die("epoll");
        int n = epoll_wait(ep, &got, 1, 30000);
        if (n < 0)
            die("epoll_wait");
        ev = n ? got.events : 0;
    } else {
        struct pollfd p = {.fd = fd, .events = POLLOUT};
        int n = poll(&p, 1, 30000);
        if (n < 0)
            die("poll");
        ev = n ? (unsigned)p.revents : 0;
    }
    long long waited = now_ms() - t0;
    int err = 0;
    socklen_t len = sizeof err;
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
        die("getsockopt");
    char names[64];
    poll_names(ev, names, sizeof names);
    printf("vsock: nonblocking connect: %s after %lld ms, SO_ERROR %s\n", names, waited,
           err ? ename(err) : "0");
    close(fd);
    return err ? 1 : 0;
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    crc_init();
    int timeout = 0;
    long count = 0;
    for (int i = 1; i + 1 < argc; i++) {
        if (!strcmp(argv[i], "--timeout"))
            timeout = atoi(argv[i + 1]);
        if (!strcmp(argv[i], "--count"))
            count = atol(argv[i + 1]);
    }
    const char *mode = argc > 1 ? argv[1] : "";
    if (!strcmp(mode, "server") && argc > 2)
        return server(atol(argv[2]), count);
    if (!strcmp(mode, "client") && argc > 3)
        return client(atol(argv[2]), atol(argv[3]), timeout);
    if (!strcmp(mode, "send") && argc > 4)
        return sender(atol(argv[2]), atol(argv[3]), atol(argv[4]));
    if (!strcmp(mode, "recv") && argc > 2)
        return receiver(atol(argv[2]), timeout);
    if (!strcmp(mode, "noread") && argc > 2) {
        int lfd = listener(atol(argv[2]));
        int fd = accept_one(lfd);
        (void)fd;
        printf("vsock: not reading\n");
        fflush(stdout);
        for (;;)
            pause();
    }
    if (!strcmp(mode, "connect") && argc > 5 && !strcmp(argv[4], "--nonblock"))
        return connect_nonblocking(atol(argv[2]), atol(argv[3]), argv[5]);
    if (!strcmp(mode, "connect") && argc > 3) {
        int fd = connect_to(atol(argv[2]), atol(argv[3]));
        printf("vsock: connected\n");
        close(fd);
        return 0;
    }
    fprintf(stderr, "usage: vsock server PORT [--count N] | client CID PORT [--timeout S] | "
                    "send CID PORT MIB | recv PORT [--timeout S] | noread PORT | "
                    "connect CID PORT [--nonblock poll|epoll]\n");
    return 2;
}
