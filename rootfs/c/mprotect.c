/* mprotect: memory protection as Linux does it, printed so that the output can be compared between
 * the host and the guest kernel (tests/tests/guest_threads.rs runs it on both, built with glibc and
 * with musl). Cases: PROT_NONE guard pages fault with SEGV_ACCERR, writes to read-only pages fault,
 * unmapped pages fault with SEGV_MAPERR (si_addr is the address touched), mprotect splits and merges
 * areas (seen in /proc/self/maps), partial munmap, ENOMEM at a hole (the part before it changed),
 * EINVAL, EFAULT from read()/write() on protected buffers, copy-on-write after fork with mprotect on
 * either side, an unhandled SIGSEGV killing a child, MAP_FIXED_NOREPLACE, the maps line format. */
#define PROG "mprotect"
#include "common.h"
#include <setjmp.h>
#include <sys/mman.h>

#ifndef MAP_FIXED_NOREPLACE
#define MAP_FIXED_NOREPLACE 0x100000
#endif

static long P;
static sigjmp_buf jb;
static volatile int got_sig, got_code;
static void *volatile got_addr;

static void on_segv(int sig, siginfo_t *si, void *uc) {
    (void)uc;
    got_sig = sig;
    got_code = si->si_code;
    got_addr = si->si_addr;
    siglongjmp(jb, 1);
}

/* Touches *p (writing if `write`): "ok", or the signal, its code and whether si_addr is p. */
static const char *probe(volatile char *p, int write) {
    static char buf[80];
    got_sig = 0;
    if (sigsetjmp(jb, 1) == 0) {
        if (write)
            *p = 1;
        else
            (void)*p;
        return "ok";
    }
    snprintf(buf, sizeof buf, "%s %s%s", got_sig == SIGSEGV ? "SIGSEGV" : "other signal",
             got_code == SEGV_ACCERR   ? "SEGV_ACCERR"
             : got_code == SEGV_MAPERR ? "SEGV_MAPERR"
                                       : "other code",
             got_addr == (void *)p ? "" : " (wrong si_addr)");
    return buf;
}

/* /proc/self/maps read whole into a static buffer (no stdio: its buffers could be mmap()ed into a
 * hole the test made). */
static char maps_buf[65536];

static const char *read_maps(void) {
    int fd = open("/proc/self/maps", O_RDONLY);
    long n = 0, r;
    if (fd < 0)
        return NULL;
    while ((r = read(fd, maps_buf + n, sizeof maps_buf - 1 - n)) > 0)
        n += r;
    close(fd);
    maps_buf[n] = 0;
    return maps_buf;
}

/* The permissions of each /proc/self/maps line overlapping [a, a + len), space separated. */
static const char *areas(char *a, long len) {
    static char out[256];
    out[0] = 0;
    const char *m = read_maps();
    if (!m)
        return "no /proc/self/maps";
    for (const char *line = m; *line; line = strchr(line, '\n') ? strchr(line, '\n') + 1 : "") {
        unsigned long s, e;
        char perms[8];
        if (sscanf(line, "%lx-%lx %7s", &s, &e, perms) != 3)
            continue;
        if (s < (unsigned long)a + len && e > (unsigned long)a) {
            if (out[0])
                strcat(out, " ");
            strcat(out, perms);
        }
    }
    return out[0] ? out : "none";
}

static void maps_format(void) {
    /* Between two PROT_NONE pages, so that it is an area of its own. */
    char *m = mmap(NULL, 3 * P, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0) + P;
    mprotect(m, P, PROT_READ | PROT_WRITE);
    char want[64];
    int anon = 0, stack = 0, text = 0;
    snprintf(want, sizeof want, "%lx-%lx rw-p 00000000 00:00 0 \n", (unsigned long)m,
             (unsigned long)m + P);
    const char *all = read_maps();
    for (const char *line = all ? all : ""; *line;) {
        const char *nl = strchr(line, '\n');
        size_t n = nl ? (size_t)(nl - line) + 1 : strlen(line);
        if (strncmp(line, want, n) == 0 && n == strlen(want))
            anon = 1;
        if (n > 9 && strncmp(line + n - 9, " [stack]\n", 9) == 0 && memmem(line, n, " rw-p ", 6))
            stack = 1;
        /* The executable's code: a private, executable mapping of a file whose name starts at
         * column 74 (the padding Linux uses). */
        if (memmem(line, n, "r-xp", 4) && n > 74 && line[72] == ' ' && line[73] == '/')
            text = 1;
        line += n;
    }
    SAY("maps: anonymous line as Linux prints it: %s\n", anon ? "yes" : "no");
    SAY("maps: [stack] rw-p: %s\n", stack ? "yes" : "no");
    SAY("maps: code mapped from the executable: %s\n", text ? "yes" : "no");
    munmap(m - P, 3 * P);
}

int main(void) {
    P = sysconf(_SC_PAGESIZE);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_segv;
    sa.sa_flags = SA_SIGINFO | SA_NODEFER;
    sigaction(SIGSEGV, &sa, NULL);

    char *base = mmap(NULL, 4 * P, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    SAY("PROT_NONE area: %s\n", areas(base, 4 * P));
    SAY("read of PROT_NONE: %s\n", probe(base, 0));
    SAY("mprotect middle RW: %s\n", err(mprotect(base + P, 2 * P, PROT_READ | PROT_WRITE)));
    SAY("areas: %s\n", areas(base, 4 * P));
    SAY("write middle: %s, %s\n", probe(base + P, 1), probe(base + 2 * P, 1));
    SAY("read of the guard above: %s\n", probe(base + 3 * P, 0));
    SAY("mprotect one page read-only: %s\n", err(mprotect(base + P, P, PROT_READ)));
    SAY("areas: %s\n", areas(base, 4 * P));
    SAY("write to read-only: %s\n", probe(base + P, 1));
    SAY("read of read-only: %s, value %d\n", probe(base + P, 0), base[P]);
    SAY("mprotect all RW: %s\n", err(mprotect(base, 4 * P, PROT_READ | PROT_WRITE)));
    SAY("areas (merged): %s\n", areas(base, 4 * P));
    SAY("values kept: %d %d\n", base[P], base[2 * P]);
    SAY("munmap second page: %s\n", err(munmap(base + P, P)));
    SAY("areas: %s\n", areas(base, 4 * P));
    SAY("read of the hole: %s\n", probe(base + P, 0));
    SAY("third page still %d\n", base[2 * P]);
    SAY("mprotect over the hole: %s\n", err(mprotect(base, 4 * P, PROT_READ)));
    SAY("areas (first changed): %s\n", areas(base, 4 * P));
    SAY("mprotect from the hole: %s\n", err(mprotect(base + P, 2 * P, PROT_NONE)));
    SAY("areas (unchanged): %s\n", areas(base, 4 * P));
    SAY("mprotect misaligned: %s\n", err(syscall(SYS_mprotect, base + 1, P, PROT_READ)));
    SAY("mprotect unknown bit: %s\n", err(syscall(SYS_mprotect, base, P, 0x10)));
    SAY("mprotect length 0: %s\n", err(mprotect(base, 0, PROT_READ)));
    SAY("mprotect unmapped: %s\n", err(mprotect((char *)0x10000, P, PROT_READ)));
    SAY("MAP_FIXED_NOREPLACE over a mapping: %s\n",
        mmap(base, P, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0) ==
                MAP_FAILED
            ? err(-1)
            : "mapped");

    /* System calls on protected buffers. */
    int fds[2];
    pipe(fds);
    write(fds[1], "xy", 2);
    mprotect(base, P, PROT_NONE);
    SAY("read() into PROT_NONE: %s\n", err(read(fds[0], base, 1)));
    SAY("write() from PROT_NONE: %s\n", err(write(fds[1], base, 1)));
    mprotect(base, P, PROT_READ);
    SAY("read() into read-only: %s\n", err(read(fds[0], base, 1)));
    SAY("write() from read-only: %s\n", err(write(fds[1], base, 1)));
    close(fds[0]);
    close(fds[1]);
    SAY("munmap all: %s\n", err(munmap(base, 4 * P)));
    SAY("read after munmap: %s\n", probe(base + 2 * P, 0));

    /* A thread stack as glibc and musl make one: PROT_NONE, then all but the guard page RW. */
    char *st = mmap(NULL, 16 * P, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    SAY("stack: %s\n", err(mprotect(st + P, 15 * P, PROT_READ | PROT_WRITE)));
    memset(st + P, 0x5a, 15 * P);
    SAY("stack areas: %s, guard: %s\n", areas(st, 16 * P), probe(st + P - 1, 1));
    munmap(st, 16 * P);

    /* Copy-on-write with mprotect on both sides of a fork. */
    char *c = mmap(NULL, P, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    c[0] = 7;
    pid_t pid = fork();
    if (pid == 0) {
        mprotect(c, P, PROT_READ);
        printf("mprotect: child: write to read-only: %s\n", probe(c, 1));
        mprotect(c, P, PROT_READ | PROT_WRITE);
        c[0] = 8;
        printf("mprotect: child: after write %d\n", c[0]);
        fflush(stdout);
        _exit(0);
    }
    int status;
    waitpid(pid, &status, 0);
    SAY("parent: child exited %d, my value %d\n", WEXITSTATUS(status), c[0]);
    mprotect(c, P, PROT_READ);
    mprotect(c, P, PROT_READ | PROT_WRITE);
    c[0] = 9;
    SAY("parent: after write %d\n", c[0]);
    pid = fork();
    if (pid == 0) {
        signal(SIGSEGV, SIG_DFL);
        mprotect(c, P, PROT_READ);
        c[0] = 10;
        _exit(0);
    }
    waitpid(pid, &status, 0);
    SAY("child writing read-only without a handler: %s %d, parent value %d\n",
        WIFSIGNALED(status) ? "killed by signal" : "exited", WIFSIGNALED(status) ? WTERMSIG(status) : 0,
        c[0]);
    maps_format();
    SAY("done\n");
    return 0;
}
