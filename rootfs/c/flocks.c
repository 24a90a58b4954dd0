/* flocks: flock(2), open-file-description locks (F_OFD_SETLK, F_OFD_SETLKW, F_OFD_GETLK) and F_SETLKW's
 * deadlock detection (EDEADLK), printed so that the output can be compared between the host and the
 * guest kernel (tests/tests/guest_busybox.rs, glibc and musl). The locked file is in /tmp.
 * flock: owned by the open file description (dup and fork share it, a second open() does not),
 * released by LOCK_UN or the description's last close, independent of fcntl's locks; a conversion
 * that fails drops the old lock (Linux); LOCK_NB gives EWOULDBLOCK; a blocked LOCK_EX waits.
 * OFD locks: owned by the description, conflicting with the same process's record locks, l_pid -1 in
 * F_GETLK, EINVAL for l_pid != 0, kept across a close of another descriptor of the file, released by
 * the description's last close; F_OFD_SETLKW waits. EDEADLK: two processes each holding a byte the
 * other wants. */
#define PROG "flocks"
#include "common.h"
#include <sys/file.h>

/* F_GETLK or F_OFD_GETLK for a write request on [start, start+len): "unlocked" or "TYPE start len pid P"
 * (P: -1, self, parent or other). */
static const char *probe(int fd, int cmd, off_t start, off_t len, pid_t parent) {
    static char buf[96];
    struct flock l = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = start, .l_len = len};
    if (fcntl(fd, cmd, &l) < 0)
        return err(-1);
    if (l.l_type == F_UNLCK)
        return "unlocked";
    char pid[16];
    if (l.l_pid == -1)
        strcpy(pid, "-1");
    else
        strcpy(pid, l.l_pid == getpid() ? "self" : l.l_pid == parent ? "parent" : "other");
    snprintf(buf, sizeof buf, "%s %ld %ld pid %s", l.l_type == F_WRLCK ? "write" : "read", (long)l.l_start,
             (long)l.l_len, pid);
    return buf;
}

/* Waits until `pid` sleeps (state S in /proc/PID/stat): after its last message, the lock call. */
static void wait_asleep(pid_t pid) {
    char path[64], buf[256];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    for (int i = 0; i < 3000; i++) {
        FILE *f = fopen(path, "r");
        if (f) {
            size_t n = fread(buf, 1, sizeof buf - 1, f);
            fclose(f);
            buf[n] = 0;
            char *close = strrchr(buf, ')');
            if (close && close[2] == 'S')
                return;
        }
        sleep_ms(10);
    }
    SAY("child %d never slept\n", (int)pid);
}

static void reap(pid_t pid) {
    int st;
    waitpid(pid, &st, 0);
    SAY("child exit %d\n", WIFEXITED(st) ? WEXITSTATUS(st) : -1);
}

int main(void) {
    char path[64];
    snprintf(path, sizeof path, "/tmp/flocks.%d", (int)getpid());
    int fd1 = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
    if (fd1 < 0) {
        perror("flocks: open");
        return 1;
    }
    if (write(fd1, "0123456789abcdef", 16) != 16)
        return 1;
    pid_t parent = getpid();
    int up[2], down[2]; /* up: child to parent, down: parent to child */
    if (pipe(up) < 0 || pipe(down) < 0)
        return 1;
    char c;

    /* flock: descriptions, dup, close. */
    int fd2 = open(path, O_RDONLY);
    SAY("flock ex: %s\n", err(flock(fd1, LOCK_EX)));
    SAY("flock ex again: %s\n", err(flock(fd1, LOCK_EX)));
    SAY("other description ex nb: %s\n", err(flock(fd2, LOCK_EX | LOCK_NB)));
    SAY("other description sh nb: %s\n", err(flock(fd2, LOCK_SH | LOCK_NB)));
    int fd3 = dup(fd1);
    SAY("dup ex nb: %s\n", err(flock(fd3, LOCK_EX | LOCK_NB)));
    SAY("fcntl read lock beside it: %s\n", err(lock_range(fd2, F_SETLK, F_RDLCK, 0, 0)));
    lock_range(fd2, F_SETLK, F_UNLCK, 0, 0);
    close(fd1);
    SAY("after closing one of two descriptors, sh nb: %s\n", err(flock(fd2, LOCK_SH | LOCK_NB)));
    close(fd3);
    SAY("after the last close, sh nb: %s\n", err(flock(fd2, LOCK_SH | LOCK_NB)));

    /* A failed conversion drops the old lock. */
    int fa = open(path, O_RDONLY), fb = open(path, O_RDONLY);
    SAY("a sh: %s\n", err(flock(fa, LOCK_SH)));
    SAY("b sh: %s\n", err(flock(fb, LOCK_SH | LOCK_NB)));
    flock(fd2, LOCK_UN);
    SAY("a upgrade nb while b shares: %s\n", err(flock(fa, LOCK_EX | LOCK_NB)));
    SAY("b upgrade nb: %s\n", err(flock(fb, LOCK_EX | LOCK_NB)));
    SAY("a sh nb while b holds ex: %s\n", err(flock(fa, LOCK_SH | LOCK_NB)));
    SAY("b unlock: %s\n", err(flock(fb, LOCK_UN)));
    SAY("a ex nb: %s\n", err(flock(fa, LOCK_EX | LOCK_NB)));

    /* Shared by fork: the child's unlock is the parent's; a blocked LOCK_EX waits for LOCK_UN. */
    pid_t pid = fork();
    if (pid == 0) {
        SAY("child: inherited description un: %s\n", err(flock(fa, LOCK_UN)));
        int own = open(path, O_RDONLY);
        SAY("child: own description ex nb: %s\n", err(flock(own, LOCK_EX | LOCK_NB)));
        SAY("child: own description un: %s\n", err(flock(own, LOCK_UN)));
        if (write(up[1], "1", 1) != 1 || read(down[0], &c, 1) != 1)
            _exit(1);
        SAY("child: own description ex nb while parent shares: %s\n", err(flock(own, LOCK_EX | LOCK_NB)));
        if (write(up[1], "2", 1) != 1)
            _exit(1);
        SAY("child: blocking ex: %s\n", err(flock(own, LOCK_EX)));
        _exit(0);
    }
    if (read(up[0], &c, 1) != 1)
        return 1;
    SAY("parent sh through b: %s\n", err(flock(fb, LOCK_SH | LOCK_NB)));
    if (write(down[1], "1", 1) != 1 || read(up[0], &c, 1) != 1)
        return 1;
    wait_asleep(pid);
    SAY("parent unlocks b\n");
    int r = flock(fb, LOCK_UN);
    reap(pid);
    SAY("the unlock returned %s\n", err(r));
    SAY("after the child's exit (its description closed), ex nb: %s\n", err(flock(fb, LOCK_EX | LOCK_NB)));
    flock(fb, LOCK_UN);
    close(fa);
    close(fb);

    /* Bad requests. */
    SAY("flock 0: %s\n", err(flock(fd2, 0)));
    SAY("flock sh|ex: %s\n", err(flock(fd2, LOCK_SH | LOCK_EX)));
    close(99); /* (an fd inherited on the host would change the answer) */
    SAY("flock bad fd: %s\n", err(flock(99, LOCK_SH)));
    SAY("flock un without a lock: %s\n", err(flock(fd2, LOCK_UN)));

    /* OFD locks. */
    int o1 = open(path, O_RDWR), o2 = open(path, O_RDWR);
    SAY("ofd write 0..10: %s\n", err(lock_range(o1, F_OFD_SETLK, F_WRLCK, 0, 10)));
    SAY("own record lock 5..6 against it: %s\n", err(lock_range(o2, F_SETLK, F_WRLCK, 5, 1)));
    SAY("ofd getlk from another description: %s\n", probe(o2, F_OFD_GETLK, 0, 10, parent));
    SAY("getlk from the process: %s\n", probe(o2, F_GETLK, 0, 10, parent));
    SAY("ofd getlk from its own description: %s\n", probe(o1, F_OFD_GETLK, 0, 10, parent));
    struct flock bad = {.l_type = F_RDLCK, .l_whence = SEEK_SET, .l_start = 20, .l_len = 1, .l_pid = 1};
    SAY("ofd with l_pid 1: %s\n", err(fcntl(o2, F_OFD_SETLK, &bad)));
    SAY("record lock 20..30: %s\n", err(lock_range(o2, F_SETLK, F_WRLCK, 20, 10)));
    SAY("ofd against the process's record lock: %s\n", err(lock_range(o1, F_OFD_SETLK, F_RDLCK, 25, 1)));
    SAY("ofd getlk sees the record lock: %s\n", probe(o1, F_OFD_GETLK, 20, 10, parent));
    int o3 = dup(o1);
    SAY("ofd through a dup extends it: %s\n", err(lock_range(o3, F_OFD_SETLK, F_WRLCK, 5, 10)));
    int o4 = open(path, O_RDONLY);
    close(o4);
    SAY("a close of another descriptor keeps it: %s\n", probe(o2, F_OFD_GETLK, 0, 15, parent));
    SAY("while it dropped the record lock: %s\n", probe(o1, F_OFD_GETLK, 20, 10, parent));
    close(o1);
    SAY("one of two descriptors closed: %s\n", probe(o2, F_OFD_GETLK, 0, 15, parent));
    pid = fork();
    if (pid == 0) {
        close(o3); /* the parent's close must be the description's last */
        int mine = open(path, O_RDWR);
        SAY("child: ofd getlk: %s\n", probe(mine, F_OFD_GETLK, 0, 15, parent));
        if (write(up[1], "3", 1) != 1)
            _exit(1);
        SAY("child: ofd setlkw: %s\n", err(lock_range(mine, F_OFD_SETLKW, F_WRLCK, 0, 15)));
        SAY("child: ofd getlk after: %s\n", probe(mine, F_OFD_GETLK, 0, 15, parent));
        _exit(0);
    }
    if (read(up[0], &c, 1) != 1)
        return 1;
    wait_asleep(pid);
    SAY("parent closes the last descriptor\n");
    close(o3);
    reap(pid);
    SAY("after the child's exit: %s\n", probe(o2, F_OFD_GETLK, 0, 15, parent));
    close(o2);

    /* EDEADLK: the parent holds byte 0, the child byte 1; the child waits for byte 0; the parent
     * asking for byte 1 would wait for a process that waits for it. */
    int d = open(path, O_RDWR);
    SAY("parent byte 0: %s\n", err(lock_range(d, F_SETLK, F_WRLCK, 0, 1)));
    pid = fork();
    if (pid == 0) {
        SAY("child byte 1: %s\n", err(lock_range(d, F_SETLK, F_WRLCK, 1, 1)));
        if (write(up[1], "4", 1) != 1)
            _exit(1);
        SAY("child setlkw byte 0: %s\n", err(lock_range(d, F_SETLKW, F_WRLCK, 0, 1)));
        _exit(0);
    }
    if (read(up[0], &c, 1) != 1)
        return 1;
    wait_asleep(pid);
    SAY("parent setlkw byte 1: %s\n", err(lock_range(d, F_SETLKW, F_WRLCK, 1, 1)));
    SAY("parent setlkw byte 2 (free): %s\n", err(lock_range(d, F_SETLKW, F_WRLCK, 2, 1)));
    SAY("parent unlocks byte 0\n");
    r = lock_range(d, F_SETLK, F_UNLCK, 0, 1);
    reap(pid);
    SAY("the unlock returned %s\n", err(r));
    SAY("parent setlkw byte 1 after the child: %s\n", err(lock_range(d, F_SETLKW, F_WRLCK, 1, 1)));
    close(d);
    unlink(path);
    SAY("done\n");
    return 0;
}
