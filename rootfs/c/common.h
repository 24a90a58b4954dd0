/* common.h: what the host-vs-guest test programs of rootfs/c share. Each prints lines that
 * tests/tests compare between the host's Linux and the guest kernel, so results are printed as
 * text that does not depend on the libc: a return value as "N", or "-1 ENAME" from errno's name.
 *
 * Use: `#define PROG "name"` (the prefix of every line SAY prints), then `#include "common.h"` before
 * any other header (it defines _GNU_SOURCE). scripts/build-rootfs.sh compiles only the .c files;
 * this file is found beside them by the compiler's "..." include rule. */
#ifndef ROOTFS_C_COMMON_H
#define ROOTFS_C_COMMON_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifdef PROG
/* One line of output, flushed at once (the lines of forked children interleave in order). */
#define SAY(...) (printf(PROG ": " __VA_ARGS__), fflush(stdout))

/* Ends the program (status 1) after a line naming what failed and errno: a failure of the test's
 * own setup, which the host and the guest must not both hit. */
static inline void die(const char *what) {
    printf(PROG ": FAILED %s: errno %d\n", what, errno);
    exit(1);
}

/* The same for a failure about the file `path`. */
static inline void die_path(const char *what, const char *path) {
    printf(PROG ": FAILED %s %s: errno %d\n", what, path, errno);
    exit(1);
}
#endif

/* Creates `path` (emptied if it exists) as a hole of `len` bytes and maps it whole, shared and
 * writable; its descriptor in `*fd`. A failure ends the program. */
static inline void *map_new_file(const char *path, size_t len, int *fd) {
    *fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
    if (*fd < 0 || ftruncate(*fd, (off_t)len))
        die_path("create", path);
    void *m = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, *fd, 0);
    if (m == MAP_FAILED)
        die_path("mmap", path);
    return m;
}

/* fcntl(fd, cmd) (F_SETLK, F_SETLKW, F_OFD_SETLK, ...) with a record lock of `type` (F_RDLCK, F_WRLCK,
 * F_UNLCK) on [start, start + len) from the file's start. */
static inline int lock_range(int fd, int cmd, short type, off_t start, off_t len) {
    struct flock l = {.l_type = type, .l_whence = SEEK_SET, .l_start = start, .l_len = len};
    return fcntl(fd, cmd, &l);
}

/* The calling thread's id (glibc before 2.30 has no gettid wrapper). */
static inline pid_t gettid_(void) { return (pid_t)syscall(SYS_gettid); }

/* Sleeps `ms` milliseconds, all of them: a signal handled meanwhile does not cut the sleep short. */
static inline void sleep_ms(int ms) {
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

/* The name of errno value `e` ("ENOENT"), or "errno N" for one not in the table. The names are
 * Linux's; EWOULDBLOCK is EAGAIN and EDEADLOCK is EDEADLK there, so those print as EAGAIN and
 * EDEADLK. Up to 8 results of either function may be used in one printf. */
static inline const char *errno_name(int e) {
#define NAME(x) \
    case x:     \
        return #x;
    switch (e) {
        NAME(EPERM) NAME(ENOENT) NAME(ESRCH) NAME(EINTR) NAME(EIO) NAME(ENXIO) NAME(E2BIG)
        NAME(ENOEXEC) NAME(EBADF) NAME(ECHILD) NAME(EAGAIN) NAME(ENOMEM) NAME(EACCES) NAME(EFAULT)
        NAME(EBUSY) NAME(EEXIST) NAME(EXDEV) NAME(ENODEV) NAME(ENOTDIR) NAME(EISDIR) NAME(EINVAL)
        NAME(ENFILE) NAME(EMFILE) NAME(ENOTTY) NAME(ETXTBSY) NAME(EFBIG) NAME(ENOSPC) NAME(ESPIPE)
        NAME(EROFS) NAME(EMLINK) NAME(EPIPE) NAME(ERANGE) NAME(EDEADLK) NAME(ENAMETOOLONG)
        NAME(ENOLCK) NAME(ENOSYS) NAME(ENOTEMPTY) NAME(ELOOP) NAME(EOVERFLOW) NAME(ENOTSOCK)
        NAME(EOPNOTSUPP) NAME(EADDRINUSE) NAME(ENOTCONN) NAME(ECONNRESET) NAME(ETIMEDOUT)
        NAME(ECONNREFUSED)
    }
#undef NAME
    static char bufs[8][24];
    static unsigned next;
    char *buf = bufs[next++ % 8];
    snprintf(buf, sizeof bufs[0], "errno %d", e);
    return buf;
}

/* A call's result as text: "N" for a value other than -1, "-1 ENAME" (errno's name) for -1. */
static inline const char *err(long r) {
    static char bufs[8][40];
    static unsigned next;
    char *buf = bufs[next++ % 8];
    if (r != -1)
        snprintf(buf, sizeof bufs[0], "%ld", r);
    else
        snprintf(buf, sizeof bufs[0], "-1 %s", errno_name(errno));
    return buf;
}

/* The shorter form some programs print: "ok" for a value other than -1, errno's name for -1. */
static inline const char *ok_or_errname(long r) { return r != -1 ? "ok" : errno_name(errno); }

/* "yes" when a check holds, "NO" (easy to spot in a diff) when it does not. */
static inline const char *yes(int c) { return c ? "yes" : "NO"; }

#endif
