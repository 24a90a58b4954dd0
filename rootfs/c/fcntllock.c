/* fcntllock: POSIX advisory record locks (F_GETLK, F_SETLK, F_SETLKW), printed so that the output can
 * be compared between the host and the guest kernel (tests/tests/guest_busybox.rs, glibc and musl).
 * The locked file is a pipe (its two ends are one inode, and the guest's root filesystem is read-only):
 * the parent write-locks through the write end, a child sees the lock with F_GETLK through the read
 * end, fails with F_SETLK (EAGAIN), waits with F_SETLKW until the parent unlocks, and the parent's own
 * locks split and merge; closing a descriptor drops the process's locks; EBADF and EINVAL cases. */
#define PROG "fcntllock"
#include "common.h"

/* F_GETLK for a `type` request: "unlocked" or "TYPE start len by parent|child|other". */
static const char *probe(int fd, short type, off_t start, off_t len, pid_t parent) {
    static char buf[96];
    struct flock l = {.l_type = type, .l_whence = SEEK_SET, .l_start = start, .l_len = len};
    if (fcntl(fd, F_GETLK, &l) < 0)
        return err(-1);
    if (l.l_type == F_UNLCK)
        return "unlocked";
    snprintf(buf, sizeof buf, "%s %ld %ld by %s", l.l_type == F_WRLCK ? "write" : "read", (long)l.l_start, (long)l.l_len,
             l.l_pid == parent ? "parent" : l.l_pid == getpid() ? "self" : "other");
    return buf;
}

int main(void) {
    int p[2], up[2], down[2]; /* up: child to parent, down: parent to child */
    pipe(p);
    pipe(up);
    pipe(down);
    pid_t parent = getpid();
    SAY("parent write lock 0..100: %s\n", err(lock_range(p[1], F_SETLK, F_WRLCK, 0, 100)));
    SAY("parent read lock on the write end: %s\n", err(lock_range(p[1], F_SETLK, F_RDLCK, 200, 10)));
    SAY("parent write lock on the read end: %s\n", err(lock_range(p[0], F_SETLK, F_WRLCK, 200, 10)));
    SAY("bad type: %s, bad range: %s\n", err(lock_range(p[1], F_SETLK, 7, 0, 1)), err(lock_range(p[1], F_SETLK, F_WRLCK, 5, -10)));
    /* The parent's own view: no conflict with itself. */
    SAY("parent probes its own range: %s\n", probe(p[0], F_WRLCK, 50, 1, parent));
    pid_t c = fork();
    if (c == 0) {
        SAY("child probes 50: %s\n", probe(p[0], F_RDLCK, 50, 1, parent));
        SAY("child probes 100..: %s\n", probe(p[0], F_WRLCK, 100, 0, parent));
        SAY("child read lock 10..20: %s\n", err(lock_range(p[0], F_SETLK, F_RDLCK, 10, 10)));
        SAY("child read lock 150..160: %s\n", err(lock_range(p[0], F_SETLK, F_RDLCK, 150, 10)));
        write(up[1], "x", 1);
        /* Blocks until the parent unlocks 0..50. */
        int r = lock_range(p[0], F_SETLKW, F_RDLCK, 10, 10);
        const char *res = err(r);
        write(up[1], "y", 1);
        char b;
        read(down[0], &b, 1);
        SAY("child waited for 10..20: %s\n", res);
        _exit(0);
    }
    char b;
    read(up[0], &b, 1);
    SAY("parent probes 150: %s\n", probe(p[1], F_WRLCK, 155, 1, parent));
    sleep_ms(200);
    SAY("parent unlocks 0..50: %s\n", err(lock_range(p[1], F_SETLK, F_UNLCK, 0, 50)));
    read(up[0], &b, 1);
    SAY("parent probes 0..50 for writing: %s\n", probe(p[1], F_WRLCK, 0, 50, parent));
    SAY("parent probes 60: %s\n", probe(p[1], F_WRLCK, 60, 1, parent));
    write(down[1], "z", 1);
    waitpid(c, NULL, 0);
    SAY("after the child exits, 10..20: %s\n", probe(p[1], F_WRLCK, 10, 10, parent));
    c = fork();
    if (c == 0) {
        SAY("a new child probes 60: %s\n", probe(p[0], F_RDLCK, 60, 1, parent));
        write(up[1], "x", 1);
        read(down[0], &b, 1);
        SAY("after the parent closed a descriptor, 60: %s\n", probe(p[0], F_RDLCK, 60, 1, parent));
        _exit(0);
    }
    read(up[0], &b, 1);
    int extra = dup(p[1]);
    close(extra);
    write(down[1], "y", 1);
    waitpid(c, NULL, 0);
    SAY("done\n");
    return 0;
}
