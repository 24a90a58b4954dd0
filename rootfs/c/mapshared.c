/* Writable shared file mappings (tests/tests/guest_fs.rs): the mapping, read/write/pread/pwrite and
 * other mappings of the file see one copy of each page; msync, munmap and exit put what was
 * written through a mapping into the file. The host and the guest must print the same lines; the
 * test then reads DIR/viamap and DIR/atexit from the powered-off image with debugfs.
 *
 *   mapshared DIR             (DIR is created; DIR/unlinked is mapped, unlinked and closed, then
 *                             written through the mapping)
 *   mapshared --durable FILE  write 64 KiB of pattern into FILE through a shared mapping only, fsync
 *                             the descriptor (no msync, no munmap), print "synced", wait forever
 *                             (the test kills the VM and reads FILE from the disk)
 */
#define PROG "mapshared"
#include "common.h"
#include <stdint.h>
#include <sys/stat.h>

#define PAGE 4096
#define SIZE (3 * PAGE + 100)

static uint64_t fnv(const void *p, size_t n) {
    const unsigned char *b = p;
    uint64_t h = 1469598103934665603ull;
    for (size_t k = 0; k < n; k++) {
        h ^= b[k];
        h *= 1099511628211ull;
    }
    return h;
}

/* The file's bytes at `off` as text (at most 15). */
static const char *peek(int fd, off_t off, size_t n) {
    static char buf[16];
    ssize_t got = pread(fd, buf, n, off);
    buf[got < 0 ? 0 : got] = 0;
    return buf;
}

/* Writes through a shared mapping reach the disk with fsync alone, as on Linux. */
static void durable(const char *path) {
    const size_t len = 64 * 1024;
    int fd;
    unsigned char *m = map_new_file(path, len, &fd);
    for (size_t k = 0; k < len; k++)
        m[k] = (unsigned char)(k * 7 + (k >> 12));
    if (fsync(fd))
        die("fsync");
    printf("mapshared: synced\n");
    for (;;)
        pause();
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc == 3 && !strcmp(argv[1], "--durable"))
        durable(argv[2]);
    if (argc != 2) {
        fprintf(stderr, "usage: mapshared DIR\n");
        return 2;
    }
    char path[512];
    if (mkdir(argv[1], 0755))
        die("mkdir");
    snprintf(path, sizeof path, "%s/f", argv[1]);
    static unsigned char data[SIZE];
    for (size_t k = 0; k < SIZE; k++)
        data[k] = (unsigned char)('a' + k % 26);
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
    if (fd < 0 || write(fd, data, SIZE) != SIZE)
        die("write");

    char *m = mmap(NULL, 4 * PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (m == MAP_FAILED)
        die("mmap");
    printf("mapshared: mapping reads what write() wrote: %d\n", !memcmp(m, data, SIZE));
    printf("mapshared: past the end of the file the last page reads zero: %d\n",
           m[SIZE] == 0 && m[4 * PAGE - 1] == 0);

    /* Written through the mapping: read() sees it at once (one page for both). */
    memcpy(m + 10, "VIAMAP", 6);
    memcpy(m + PAGE + 5, "SECOND", 6);
    /* One call per line: peek() returns what the next call overwrites. */
    printf("mapshared: pread after a write through the mapping: [%s]\n", peek(fd, 10, 6));
    printf("mapshared: and on the next page: [%s]\n", peek(fd, PAGE + 5, 6));
    /* Written with pwrite: the mapping sees it at once. */
    if (pwrite(fd, "FDWRITE", 7, 2 * PAGE + 7) != 7)
        die("pwrite");
    printf("mapshared: the mapping after pwrite: [%.7s]\n", m + 2 * PAGE + 7);
    printf("mapshared: msync MS_SYNC %s\n", ok_or_errname(msync(m, 4 * PAGE, MS_SYNC)));
    printf("mapshared: msync MS_ASYNC %s\n", ok_or_errname(msync(m, PAGE, MS_ASYNC)));
    printf("mapshared: msync both %s\n", ok_or_errname(msync(m, PAGE, MS_SYNC | MS_ASYNC)));

    /* A child writes through the mapping it inherited; the parent's read() and mapping see it. */
    pid_t pid = fork();
    if (pid < 0)
        die("fork");
    if (pid == 0) {
        memcpy(m + 3 * PAGE + 50, "CHILD", 5);
        _exit(0);
    }
    int st;
    waitpid(pid, &st, 0);
    printf("mapshared: after the child's write: pread [%s], mapping [%.5s]\n",
           peek(fd, 3 * PAGE + 50, 5), m + 3 * PAGE + 50);

    /* A second shared mapping of the file shares the pages; a private one does not write back. */
    char *m2 = mmap(NULL, 4 * PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    char *pv = mmap(NULL, 4 * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
    if (m2 == MAP_FAILED || pv == MAP_FAILED)
        die("mmap again");
    m2[20] = 'Z';
    printf("mapshared: a second shared mapping: [%.6s] [%c] in the first\n", m2 + 10, m[20]);
    printf("mapshared: a private mapping sees the file: [%.6s]\n", pv + PAGE + 5);
    memcpy(pv, "PRIVATE", 7);
    printf("mapshared: a write to the private one leaves the file: [%s], shared mapping [%.7s]\n",
           peek(fd, 0, 7), m);
    munmap(pv, 4 * PAGE);
    munmap(m2, 4 * PAGE);

    if (munmap(m, 4 * PAGE))
        die("munmap");
    static unsigned char back[SIZE];
    ssize_t got = pread(fd, back, SIZE, 0);
    memcpy(data + 10, "VIAMAP", 6);
    memcpy(data + PAGE + 5, "SECOND", 6);
    memcpy(data + 2 * PAGE + 7, "FDWRITE", 7);
    memcpy(data + 3 * PAGE + 50, "CHILD", 5);
    data[20] = 'Z';
    printf("mapshared: the file after munmap: %ld bytes, as expected %d, fnv %016llx\n", (long)got,
           got == SIZE && !memcmp(back, data, SIZE), (unsigned long long)fnv(back, SIZE));
    close(fd);

    /* Protection: a shared writable mapping needs a descriptor open for writing. */
    int ro = open(path, O_RDONLY);
    void *r = mmap(NULL, PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, ro, 0);
    printf("mapshared: shared writable of a read-only descriptor: %s\n",
           r == MAP_FAILED ? ok_or_errname(-1) : "mapped");
    char *rm = mmap(NULL, PAGE, PROT_READ, MAP_SHARED, ro, 0);
    if (rm == MAP_FAILED)
        die("mmap read-only");
    printf("mapshared: mprotect it writable: %s\n", ok_or_errname(mprotect(rm, PAGE, PROT_READ | PROT_WRITE)));
    munmap(rm, PAGE);
    close(ro);
    int rw = open(path, O_RDWR);
    rm = mmap(NULL, PAGE, PROT_READ, MAP_SHARED, rw, 0);
    if (rm == MAP_FAILED)
        die("mmap rw read-only");
    printf("mapshared: mprotect a read-only mapping of a read-write descriptor writable: %s\n",
           ok_or_errname(mprotect(rm, PAGE, PROT_READ | PROT_WRITE)));
    rm[0] = 'W';
    munmap(rm, PAGE);
    printf("mapshared: written after mprotect: [%s]\n", peek(rw, 0, 3));
    close(rw);

    /* Written through a mapping, never synced, unmapped: on the disk after the power-off. */
    static const char note[] = "written through a mapping, never synced\n";
    snprintf(path, sizeof path, "%s/viamap", argv[1]);
    fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
    if (fd < 0 || ftruncate(fd, sizeof note - 1))
        die("viamap");
    m = mmap(NULL, PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (m == MAP_FAILED)
        die("mmap viamap");
    close(fd);
    memcpy(m, note, sizeof note - 1);
    munmap(m, PAGE);

    /* A child writes through a mapping and exits without munmap: exit puts it in the file. */
    static const char note2[] = "written by a child that exited with it mapped\n";
    snprintf(path, sizeof path, "%s/atexit", argv[1]);
    fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
    if (fd < 0 || ftruncate(fd, sizeof note2 - 1))
        die("atexit");
    pid = fork();
    if (pid == 0) {
        char *c = mmap(NULL, PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        if (c == MAP_FAILED)
            _exit(1);
        memcpy(c, note2, sizeof note2 - 1);
        _exit(0);
    }
    waitpid(pid, &st, 0);
    printf("mapshared: the child's exit status %d, read [%.12s]\n", WEXITSTATUS(st),
           peek(fd, 0, 12));
    close(fd);
    /* A mapping holds its file (Linux's vm_file): unlinked and closed while mapped, the file lives
     * on, its pages and blocks its own, until munmap. Another file made meanwhile must not get its
     * inode or blocks. Only the first page is touched before the close. */
    static unsigned char kept[2 * PAGE], other[2 * PAGE], back2[2 * PAGE];
    for (size_t k = 0; k < sizeof kept; k++) {
        kept[k] = (unsigned char)('0' + k % 10);
        other[k] = (unsigned char)('A' + k % 7);
    }
    snprintf(path, sizeof path, "%s/unlinked", argv[1]);
    fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
    if (fd < 0 || write(fd, kept, sizeof kept) != (ssize_t)sizeof kept)
        die("unlinked");
    m = mmap(NULL, 2 * PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (m == MAP_FAILED)
        die("mmap unlinked");
    char first = m[0];
    if (unlink(path) || close(fd))
        die("unlink");
    snprintf(path, sizeof path, "%s/other", argv[1]);
    fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
    if (fd < 0 || write(fd, other, sizeof other) != (ssize_t)sizeof other)
        die("other");
    printf("mapshared: unlinked and closed, the mapping reads its file: %d %d\n", first == kept[0],
           !memcmp(m + PAGE, kept + PAGE, PAGE));
    memcpy(m + 5, "KEPT", 4);
    memcpy(m + PAGE + 5, "HELD", 4);
    printf("mapshared: written through it and read back: [%.4s] [%.4s]\n", m + 5, m + PAGE + 5);
    if (munmap(m, 2 * PAGE))
        die("munmap unlinked");
    got = pread(fd, back2, sizeof back2, 0);
    printf("mapshared: the file made meanwhile is its own: %d\n",
           got == (ssize_t)sizeof back2 && !memcmp(back2, other, sizeof other));
    close(fd);

    /* The same on tmpfs (/tmp): a writable shared mapping and read/write see one page, holes
     * included, and so does a forked child. */
    snprintf(path, sizeof path, "/tmp/mapshared-%d", (int)getpid());
    fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
    if (fd < 0 || ftruncate(fd, 2 * PAGE))
        die("tmpfs file");
    m = mmap(NULL, 2 * PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (m == MAP_FAILED)
        die("mmap tmpfs");
    memcpy(m + 3, "TMPFS", 5);
    memcpy(m + PAGE + 9, "HOLE", 4);
    printf("mapshared: tmpfs, read after writes through the mapping: [%s]\n", peek(fd, 3, 5));
    printf("mapshared: tmpfs, and in the hole's page: [%s]\n", peek(fd, PAGE + 9, 4));
    if (pwrite(fd, "FDW", 3, 100) != 3)
        die("pwrite tmpfs");
    printf("mapshared: tmpfs, the mapping after pwrite: [%.3s]\n", m + 100);
    pid = fork();
    if (pid < 0)
        die("fork tmpfs");
    if (pid == 0) {
        memcpy(m + PAGE + 200, "KID", 3);
        _exit(0);
    }
    waitpid(pid, &st, 0);
    printf("mapshared: tmpfs, after the child's write: [%s]\n", peek(fd, PAGE + 200, 3));
    printf("mapshared: tmpfs, msync %s\n", ok_or_errname(msync(m, 2 * PAGE, MS_SYNC)));
    if (munmap(m, 2 * PAGE))
        die("munmap tmpfs");
    got = pread(fd, back2, sizeof back2, 0);
    printf("mapshared: tmpfs, after munmap: %ld bytes, fnv %016llx\n", (long)got,
           (unsigned long long)fnv(back2, sizeof back2));
    unlink(path);
    close(fd);

    printf("mapshared: done\n");
    return 0;
}
