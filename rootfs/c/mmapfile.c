/* mmapfile: file mappings and the other memory calls, printed so that the output can be compared
 * between the host and the guest kernel (tests/tests/guest_threads.rs, glibc and musl builds).
 * The file mapped is the program itself (argv[0]: the same bytes on both). Cases: MAP_PRIVATE
 * read-only and writable (copy-on-write: the file and a forked child keep their bytes), offsets,
 * MAP_SHARED read-only, EACCES for a writable shared mapping of a read-only descriptor (mmap and
 * mprotect), EINVAL/ENODEV/EBADF, SIGBUS past the end of the file, MADV_DONTNEED (anonymous pages
 * read back as zero, private file pages as the file again), mincore, msync, mremap (shrink, grow
 * in place, move, MREMAP_FIXED), pread64, and the maps line naming the file. */
#define PROG "mmapfile"
#include "common.h"
#include <setjmp.h>
#include <sys/mman.h>
#include <sys/stat.h>

static long P;
static sigjmp_buf jb;
static volatile int got_sig, got_code;

static void on_fault(int sig, siginfo_t *si, void *uc) {
    (void)uc;
    got_sig = sig;
    got_code = si->si_code;
    siglongjmp(jb, 1);
}

static const char *probe(volatile char *p) {
    static char bufs[4][64];
    static int next;
    char *buf = bufs[next++ % 4];
    if (sigsetjmp(jb, 1) == 0) {
        (void)*p;
        return "ok";
    }
    snprintf(buf, 64, "%s code %d", got_sig == SIGBUS ? "SIGBUS" : got_sig == SIGSEGV ? "SIGSEGV" : "other",
             got_code);
    return buf;
}

static const char *maperr(void *m) { return m == MAP_FAILED ? err(-1) : "mapped"; }

int main(int argc, char **argv) {
    (void)argc;
    P = sysconf(_SC_PAGESIZE);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_fault;
    sa.sa_flags = SA_SIGINFO | SA_NODEFER;
    sigaction(SIGBUS, &sa, NULL);
    sigaction(SIGSEGV, &sa, NULL);

    int fd = open(argv[0], O_RDONLY);
    struct stat st;
    fstat(fd, &st);
    long size = st.st_size;
    char *want = malloc(size);
    long got = pread(fd, want, size, 0);
    SAY("pread of the whole file: %s\n", yes(got == size));

    char *m = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
    SAY("private read-only map: %s, ELF magic: %s, equals the file: %s\n", maperr(m),
        yes(memcmp(m, "\177ELF", 4) == 0), yes(memcmp(m, want, size) == 0));
    char *o = mmap(NULL, P, PROT_READ, MAP_PRIVATE, fd, 2 * P);
    SAY("map at offset 2 pages equals the file there: %s\n", yes(memcmp(o, want + 2 * P, P) == 0));
    munmap(o, P);
    SAY("write to the read-only map: %s\n", sigsetjmp(jb, 1) == 0 ? (m[0] = 1, "ok") : "SIGSEGV");

    char *w = mmap(NULL, 2 * P, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
    w[1] = 'X';
    w[P] = 'Y';
    char buf[8];
    pread(fd, buf, 2, 0);
    SAY("private writable map: wrote %c, file still has %c, other map still %c\n", w[1], buf[1], m[1]);
    pid_t pid = fork();
    if (pid == 0) {
        w[1] = 'C';
        printf("mmapfile: child sees its own write: %c\n", w[1]);
        fflush(stdout);
        _exit(0);
    }
    waitpid(pid, NULL, 0);
    SAY("parent keeps %c\n", w[1]);
    const char *dn = err(madvise(w, P, MADV_DONTNEED));
    SAY("MADV_DONTNEED on the private file page: %s, reads the file again: %s, page 2 kept: %c\n", dn,
        yes(w[1] == want[1]), w[P]);
    munmap(w, 2 * P);

    char *s = mmap(NULL, size, PROT_READ, MAP_SHARED, fd, 0);
    SAY("shared read-only map: %s, equals the file: %s\n", maperr(s), yes(s != MAP_FAILED && memcmp(s, want, size) == 0));
    SAY("mprotect it writable: %s\n", err(mprotect(s, P, PROT_READ | PROT_WRITE)));
    SAY("shared writable map of a read-only fd: %s\n", maperr(mmap(NULL, P, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0)));
    SAY("misaligned offset: %s\n", maperr(mmap(NULL, P, PROT_READ, MAP_PRIVATE, fd, 1)));
    SAY("bad descriptor: %s\n", maperr(mmap(NULL, P, PROT_READ, MAP_PRIVATE, 99, 0)));
    int dir = open("/", O_RDONLY | O_DIRECTORY);
    SAY("a directory: %s\n", maperr(mmap(NULL, P, PROT_READ, MAP_PRIVATE, dir, 0)));
    close(dir);
    SAY("no type: %s\n", maperr(mmap(NULL, P, PROT_READ, MAP_ANONYMOUS, -1, 0)));

    /* Past the end: the page holding the last byte reads (zeros after it), the next one is SIGBUS. */
    long pages = (size + P - 1) / P;
    char *b = mmap(NULL, (pages + 1) * P, PROT_READ, MAP_PRIVATE, fd, 0);
    SAY("last page: %s, zero after the end: %s\n", probe(b + size - 1),
        yes(size % P == 0 || b[size] == 0));
    SAY("page after the end: %s\n", probe(b + pages * P));
    munmap(b, (pages + 1) * P);

    SAY("msync: %s, both sync flags: %s, misaligned: %s\n", err(msync(m, P, MS_SYNC)),
        err(msync(m, P, MS_SYNC | MS_ASYNC)), err(msync(m + 1, P, MS_SYNC)));
    SAY("maps names the file: ");
    {
        char line[512], want_line[64];
        int named = 0;
        snprintf(want_line, sizeof want_line, "%lx-", (unsigned long)m);
        int mf = open("/proc/self/maps", O_RDONLY);
        static char all[65536];
        long n = 0, r;
        while ((r = read(mf, all + n, sizeof all - 1 - n)) > 0)
            n += r;
        all[n] = 0;
        close(mf);
        for (char *l = all; *l;) {
            char *nl = strchr(l, '\n');
            size_t len = nl ? (size_t)(nl - l) : strlen(l);
            if (len < sizeof line) {
                memcpy(line, l, len);
                line[len] = 0;
                size_t an = strlen(argv[0]);
                if (strncmp(line, want_line, strlen(want_line)) == 0 && len > an &&
                    strcmp(line + len - an, argv[0]) == 0 && strstr(line, " r--p 00000000 "))
                    named = 1;
            }
            l += len + (nl ? 1 : 0);
        }
        printf("%s\n", yes(named));
    }
    munmap(m, size);
    munmap(s, size);

    /* Anonymous memory: MADV_DONTNEED, mincore, mremap. */
    char *a = mmap(NULL, 4 * P, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    unsigned char vec[8];
    mincore(a, 4 * P, vec);
    SAY("mincore untouched: %d%d%d%d\n", vec[0], vec[1], vec[2], vec[3]);
    memset(a, 0x5a, 4 * P);
    mincore(a, 4 * P, vec);
    SAY("mincore touched: %d%d%d%d\n", vec[0], vec[1], vec[2], vec[3]);
    SAY("MADV_DONTNEED pages 1-2: %s\n", err(madvise(a + P, 2 * P, MADV_DONTNEED)));
    mincore(a, 4 * P, vec);
    SAY("mincore after: %d%d%d%d, values %x %x %x %x\n", vec[0], vec[1], vec[2], vec[3], a[0], a[P],
        a[2 * P], a[3 * P] & 0xff);
    SAY("madvise misaligned: %s, unknown advice: %s, MADV_WILLNEED: %s\n", err(madvise(a + 1, P, MADV_DONTNEED)),
        err(madvise(a, P, 12345)), err(madvise(a, P, MADV_WILLNEED)));
    SAY("mincore misaligned: %s, unmapped: %s\n", err(mincore(a + 1, P, vec)),
        err(mincore((char *)0x10000, P, vec)));
    munmap(a + 2 * P, 2 * P);
    SAY("madvise over a hole: %s, msync over a hole: %s\n", err(madvise(a, 4 * P, MADV_DONTNEED)),
        err(msync(a, 4 * P, MS_SYNC)));
    a[0] = 1;
    a[P] = 2;
    char *r = mremap(a, 2 * P, P, 0);
    SAY("mremap shrink in place: %s, value %d\n", yes(r == a), r[0]);
    r = mremap(a, P, 2 * P, 0);
    SAY("mremap grow in place into the freed page: %s, values %d %d\n", yes(r == a), r[0], r[P]);
    /* Block growth with a mapping right after the area. */
    char *blk = mmap(a + 2 * P, P, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
    SAY("blocker: %s\n", yes(blk == a + 2 * P));
    SAY("mremap grow without MAYMOVE: %s\n", err((long)mremap(a, 2 * P, 4 * P, 0) == -1 ? -1 : 0));
    r[P] = 3;
    char *moved = mremap(a, 2 * P, 8 * P, MREMAP_MAYMOVE);
    SAY("mremap move: %s, values %d %d, new pages zero: %s, old address: %s\n", yes(moved != MAP_FAILED && moved != a),
        moved[0], moved[P], yes(moved[7 * P] == 0), probe(a));
    char *fixed = mmap(NULL, 16 * P, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    char *f2 = mremap(moved, 8 * P, 2 * P, MREMAP_MAYMOVE | MREMAP_FIXED, fixed + 4 * P);
    SAY("mremap fixed: %s, values %d %d\n", yes(f2 == fixed + 4 * P), f2[0], f2[P]);
    SAY("mremap fixed without MAYMOVE: %s\n", err((long)mremap(f2, P, P, MREMAP_FIXED, fixed) == -1 ? -1 : 0));
    SAY("mremap of unmapped memory: %s\n", err((long)mremap((char *)0x10000, P, 2 * P, MREMAP_MAYMOVE) == -1 ? -1 : 0));
    SAY("mremap to length 0: %s\n", err((long)mremap(f2, P, 0, MREMAP_MAYMOVE) == -1 ? -1 : 0));

    /* pread64 leaves the offset alone. */
    char e[4] = {0};
    SAY("pread at 1: %s \"%.3s\", offset after: %ld\n", err(pread(fd, e, 3, 1)), e, (long)lseek(fd, 0, SEEK_CUR));
    SAY("pread negative offset: %s\n", err(syscall(SYS_pread64, fd, e, 1, -1L)));
    int pfd[2];
    pipe(pfd);
    SAY("pread on a pipe: %s\n", err(pread(pfd[0], e, 1, 0)));
    SAY("done\n");
    return 0;
}
