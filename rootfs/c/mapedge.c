/* The edges of shared file mappings (tests/tests/guest_fs.rs), as Linux draws them:
 *
 *   mapedge DIR             (run as root; the host and the guest must print the same lines)
 *       - truncation: a file mapped shared and private is truncated; a touch of a page wholly past
 *         the new end is SIGBUS, the page holding the end reads zeros past it, and after the file
 *         grows again those pages read zeros (Linux's unmap_mapping_range). On DIR (a disk
 *         filesystem) and on a tmpfs mounted at DIR/small.
 *       - a full tmpfs (size=64k): a write through a mapping into a hole is SIGBUS; after a
 *         delete it works.
 *       - mtime: a write through a mapping updates the file's mtime (page_mkwrite /
 *         file_update_time); on a disk filesystem again after msync wrote the page back, on
 *         tmpfs not (its pages stay writable).
 *   mapedge --writeback FILE  fills FILE (64 KiB, on a disk filesystem) through a shared
 *       mapping only, never msync/fsync, sleeps past the periodic write-back, writes a second
 *       pattern over the first half, sleeps again, prints "slept" and waits for the test's
 *       SIGKILL (the test then reads FILE from the disk).
 *   mapedge --spin FILE  fills FILE (64 KiB, on a disk filesystem) through a shared mapping
 *       only, prints "spinning" and computes forever without a system call (no filesystem call
 *       and no idle moment for the kernel to write back from: only the timer can); the test kills
 *       microvm with SIGKILL after two write-back periods and reads FILE from the disk.
 *   mapedge --enospc DEV DIR  mounts the small ext2 disk DEV at DIR: a hole mapped shared, the
 *       disk filled with write(), a write through the mapping into the hole is SIGBUS, and after
 *       a delete the same write works and reaches the file; then unmounts it.
 *   mapedge --grow DEV DIR  mounts the small ext2 disk DEV (1 KiB blocks) at DIR: a file's first
 *       page mapped shared and written (blocks up to the end of the file), the file grown by a
 *       write at the end of that page (a hole of two blocks left in it), the disk filled; a write
 *       through the mapping into the hole is SIGBUS (Linux write-protects the page when the size
 *       grows past it: pagecache_isize_extended), after a delete it works; the same for a second
 *       file grown by ftruncate (Linux's truncate_setsize does the same); msync and fsync, then
 *       "synced" and it waits for the test's SIGKILL (the test reads the file from the disk).
 *   mapedge --readinto DIR [--wait]  a file B made sparse (ftruncate to 64 KiB) on DIR is mapped
 *       shared and a file A on the same filesystem is read() straight into the mapping's hole: the
 *       kernel's own copy to user takes the write fault (page_mkwrite) while it reads A. Two
 *       halves: one into pages never touched, one into pages first mapped by a read. Then msync,
 *       fsync, munmap, and B read back with pread. With --wait it prints "readinto synced" and waits for
 *       the test's SIGKILL (the test reads B from the disk) instead of cleaning up.
 */
#define PROG "mapedge"
#include "common.h"
#include <setjmp.h>
#include <sys/mount.h>
#include <sys/stat.h>

#define PAGE 4096

static sigjmp_buf jump;
static volatile int bus_code;

static void on_bus(int sig, siginfo_t *si, void *uc) {
    (void)sig;
    (void)uc;
    bus_code = si->si_code;
    siglongjmp(jump, 1);
}

/* Reads (and with `write`, first writes `val` to) *p: "ok N" with the byte read, or the SIGBUS. */
static const char *touch(volatile char *p, int write, char val) {
    static char out[64];
    if (sigsetjmp(jump, 1)) {
        snprintf(out, sizeof out, "SIGBUS code %d", bus_code);
        return out;
    }
    if (write)
        *p = val;
    snprintf(out, sizeof out, "ok %d", *p);
    return out;
}

static int peek(int fd, off_t off) {
    unsigned char c = 0;
    if (pread(fd, &c, 1, off) != 1)
        return -1;
    return c;
}

/* Truncation under shared and private mappings of `path`. */
static void truncation(const char *label, const char *path) {
    static char data[3 * PAGE];
    for (size_t k = 0; k < sizeof data; k++)
        data[k] = (char)('a' + k % 26);
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
    if (fd < 0 || write(fd, data, sizeof data) != (ssize_t)sizeof data)
        die("truncation file");
    char *s = mmap(NULL, 3 * PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    char *p = mmap(NULL, 3 * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
    if (s == MAP_FAILED || p == MAP_FAILED)
        die("truncation mmap");
    printf("mapedge: %s: before: shared page 2 %s\n", label, touch(s + 2 * PAGE, 1, 'S'));
    printf("mapedge: %s: before: private page 2 %s\n", label, touch(p + 2 * PAGE + 1, 0, 0));
    printf("mapedge: %s: before: private page 0 written %s\n", label, touch(p, 1, 'P'));
    printf("mapedge: %s: before: private page 1 written past the end to be %s\n", label,
           touch(p + PAGE + 300, 1, 'Q'));
    if (ftruncate(fd, PAGE + 100))
        die("ftruncate down");
    printf("mapedge: %s: truncated: shared page 2 %s\n", label, touch(s + 2 * PAGE, 0, 0));
    printf("mapedge: %s: truncated: shared page 2 write %s\n", label,
           touch(s + 2 * PAGE + 9, 1, 'W'));
    printf("mapedge: %s: truncated: private page 2 %s\n", label, touch(p + 2 * PAGE + 1, 0, 0));
    printf("mapedge: %s: truncated: shared page 1 before the end %s\n", label,
           touch(s + PAGE + 50, 0, 0));
    printf("mapedge: %s: truncated: shared page 1 past the end %s\n", label,
           touch(s + PAGE + 200, 0, 0));
    printf("mapedge: %s: truncated: private page 0 keeps its write %s\n", label, touch(p, 0, 0));
    /* Linux unmaps only the pages wholly past the end: a private copy of the page holding the end
     * keeps what the process wrote there. */
    printf("mapedge: %s: truncated: private page 1 keeps its write past the end %s\n", label,
           touch(p + PAGE + 300, 0, 0));
    if (ftruncate(fd, 3 * PAGE))
        die("ftruncate up");
    printf("mapedge: %s: grown: shared page 2 %s\n", label, touch(s + 2 * PAGE, 0, 0));
    printf("mapedge: %s: grown: private page 2 %s\n", label, touch(p + 2 * PAGE + 1, 0, 0));
    printf("mapedge: %s: grown: shared page 1 past the old end %s\n", label,
           touch(s + PAGE + 200, 0, 0));
    printf("mapedge: %s: grown: shared page 2 write %s\n", label,
           touch(s + 2 * PAGE + 5, 1, 'G'));
    printf("mapedge: %s: grown: pread sees it: %d\n", label, peek(fd, 2 * PAGE + 5));
    if (munmap(s, 3 * PAGE) || munmap(p, 3 * PAGE))
        die("truncation munmap");
    struct stat st;
    fstat(fd, &st);
    printf("mapedge: %s: size %ld, byte %d at %d\n", label, (long)st.st_size, peek(fd, PAGE + 200),
           PAGE + 200);
    close(fd);
}

enum { PATH_LEN = 1024 };

/* DIR/hole, two pages of hole, mapped shared and writable (its descriptor in `*fd`, its path in
 * `hole`); the path of DIR/fill, the file that fills the filesystem, in `fill`. */
static char *map_hole(const char *dir, int *fd, char hole[PATH_LEN], char fill[PATH_LEN]) {
    snprintf(hole, PATH_LEN, "%s/hole", dir);
    snprintf(fill, PATH_LEN, "%s/fill", dir);
    return map_new_file(hole, 2 * PAGE, fd);
}

/* Creates the file `fill` and writes to it until the filesystem is full: pages (at most 1000, so
 * a filesystem that never fills cannot take the machine's memory), then, after the first page that
 * did not fit, single bytes (a 4 KiB write on a disk of 1 KiB blocks needs several, and perhaps an
 * indirect block). Returns its descriptor; `*stopped` is the errno of the page write that failed
 * (0 if none did) and `*filled`, unless `filled` is NULL, whether anything was written. */
static int fill_up(const char *fill, int *filled, int *stopped) {
    int ff = open(fill, O_RDWR | O_CREAT | O_TRUNC, 0644);
    if (ff < 0)
        die("fill");
    static char page[PAGE];
    memset(page, 'f', sizeof page);
    long total = 0;
    *stopped = 0;
    for (int k = 0; k < 1000; k++) {
        ssize_t n = write(ff, page, sizeof page);
        if (n <= 0) {
            *stopped = errno;
            break;
        }
        total += n;
    }
    if (*stopped)
        while (write(ff, page, 1) == 1)
            total++;
    if (filled)
        *filled = total > 0;
    return ff;
}

/* A full tmpfs: a write through a mapping into a hole is SIGBUS. */
static void full_tmpfs(const char *dir) {
    char hole[PATH_LEN], fill[PATH_LEN];
    int fd, e;
    char *m = map_hole(dir, &fd, hole, fill);
    int ff = fill_up(fill, NULL, &e);
    printf("mapedge: full tmpfs: filling stopped with errno %d\n", e);
    printf("mapedge: full tmpfs: write into a hole through the mapping: %s\n", touch(m, 1, 'X'));
    close(ff);
    if (unlink(fill))
        die("unlink fill");
    printf("mapedge: full tmpfs: after a delete: %s\n", touch(m, 1, 'X'));
    printf("mapedge: full tmpfs: pread sees it: %d\n", peek(fd, 0));
    munmap(m, 2 * PAGE);
    close(fd);
    unlink(hole);
}

/* Whether the file's mtime is still the old one set by `age`. */
static const char *changed(int fd) {
    struct stat st;
    if (fstat(fd, &st))
        die("fstat");
    return st.st_mtime != 1000000000 ? "yes" : "no";
}

static void age(int fd) {
    struct timespec old[2] = {{1000000000, 0}, {1000000000, 0}};
    if (futimens(fd, old))
        die("futimens");
}

/* mtime after writes through a mapping: on a disk filesystem msync writes the pages back and
 * write-protects them (so the next write updates mtime again), on tmpfs it does nothing. */
static void mtime(const char *label, const char *path) {
    static char data[2 * PAGE];
    memset(data, 'm', sizeof data);
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
    if (fd < 0 || write(fd, data, sizeof data) != (ssize_t)sizeof data)
        die("mtime file");
    char *m = mmap(NULL, 2 * PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (m == MAP_FAILED)
        die("mtime mmap");
    age(fd);
    /* A write that maps the page (a write fault on a page not mapped yet). */
    m[PAGE + 1] = 'w';
    printf("mapedge: %s: mtime after a write through the mapping changed: %s\n", label,
           changed(fd));
    age(fd);
    volatile char c = m[0];
    (void)c;
    printf("mapedge: %s: mtime after a read changed: %s\n", label, changed(fd));
    /* (A write to the page just read is left out: Linux 6.x may have mapped it writable at the
     * first write fault already, with the rest of a large folio.) */
    if (msync(m, 2 * PAGE, MS_SYNC))
        die("msync");
    age(fd);
    m[PAGE + 2] = 'v';
    printf("mapedge: %s: mtime after msync and another write changed: %s\n", label, changed(fd));
    munmap(m, 2 * PAGE);
    printf("mapedge: %s: the file holds the writes: %d %d\n", label, peek(fd, PAGE + 1),
           peek(fd, PAGE + 2));
    close(fd);
}

static void writeback(const char *path) {
    const size_t len = 64 * 1024;
    int fd;
    unsigned char *m = map_new_file(path, len, &fd);
    for (size_t k = 0; k < len; k++)
        m[k] = (unsigned char)(k * 7 + (k >> 12));
    printf("mapedge: written through the mapping\n");
    /* Past the periodic write-back (every 5 s): the pages are on the disk and read-only again. */
    sleep(12);
    for (size_t k = 0; k < len / 2; k++)
        m[k] = (unsigned char)(k * 13 + 1);
    printf("mapedge: the first half written again\n");
    sleep(12);
    printf("mapedge: slept\n");
    for (;;)
        pause();
}

static void spin(const char *path) {
    const size_t len = 64 * 1024;
    int fd;
    unsigned char *m = map_new_file(path, len, &fd);
    for (size_t k = 0; k < len; k++)
        m[k] = (unsigned char)(k * 5 + (k >> 12) + 3);
    printf("mapedge: written, spinning\n");
    /* No system call from here on (the compiler keeps the loop: the counter is volatile). */
    for (volatile unsigned long n = 0;; n++)
        ;
}

static void enospc(const char *dir) {
    char hole[PATH_LEN], fill[PATH_LEN];
    int fd, filled, e;
    char *m = map_hole(dir, &fd, hole, fill);
    printf("mapedge: enospc: a read of the hole %s\n", touch(m + PAGE, 0, 0));
    int ff = fill_up(fill, &filled, &e);
    printf("mapedge: enospc: filled some: %d, stopped with errno %d\n", filled, e);
    printf("mapedge: enospc: write into the hole through the mapping: %s\n", touch(m, 1, 'X'));
    printf("mapedge: enospc: the other page of the hole too: %s\n", touch(m + PAGE, 1, 'Y'));
    close(ff);
    if (unlink(fill))
        die("unlink fill");
    printf("mapedge: enospc: after a delete: %s\n", touch(m, 1, 'X'));
    printf("mapedge: enospc: msync %s\n", ok_or_errname(msync(m, 2 * PAGE, MS_SYNC)));
    printf("mapedge: enospc: pread sees it: %d\n", peek(fd, 0));
    munmap(m, 2 * PAGE);
    close(fd);
}

static void grow(const char *dir) {
    char path[PATH_LEN], fill[PATH_LEN];
    snprintf(path, PATH_LEN, "%s/grow", dir);
    snprintf(fill, PATH_LEN, "%s/fill", dir);
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
    static char head[100];
    memset(head, 'a', sizeof head);
    if (fd < 0 || write(fd, head, sizeof head) != (ssize_t)sizeof head)
        die("grow file");
    char *m = mmap(NULL, PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (m == MAP_FAILED)
        die("grow mmap");
    printf("mapedge: grow: a write through the mapping before the end: %s\n", touch(m, 1, 'b'));
    /* The file grows to the end of the page: its blocks 1 and 2 stay a hole. */
    if (pwrite(fd, "tail", 4, PAGE - 4) != 4)
        die("grow pwrite");
    struct stat st;
    fstat(fd, &st);
    printf("mapedge: grow: grown to %ld\n", (long)st.st_size);
    /* The same through ftruncate (blocks 1 to 3 a hole), on a second file. */
    snprintf(path, PATH_LEN, "%s/grow2", dir);
    int fd2 = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
    if (fd2 < 0 || write(fd2, head, sizeof head) != (ssize_t)sizeof head)
        die("grow2 file");
    char *m2 = mmap(NULL, PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, fd2, 0);
    if (m2 == MAP_FAILED)
        die("grow2 mmap");
    printf("mapedge: grow: ftruncate: a write before the end: %s\n", touch(m2, 1, 'c'));
    printf("mapedge: grow: ftruncate up %s\n", ok_or_errname(ftruncate(fd2, PAGE)));
    int e;
    int ff = fill_up(fill, NULL, &e);
    printf("mapedge: grow: filled, stopped with errno %d\n", e);
    printf("mapedge: grow: a write through the mapping into the hole: %s\n",
           touch(m + 2000, 1, 'Z'));
    printf("mapedge: grow: ftruncate: a write into the hole: %s\n", touch(m2 + 3000, 1, 'T'));
    printf("mapedge: grow: msync while full %s\n", ok_or_errname(msync(m, PAGE, MS_SYNC)));
    printf("mapedge: grow: a read before the old end: %s\n", touch(m + 50, 0, 0));
    close(ff);
    if (unlink(fill))
        die("unlink fill");
    printf("mapedge: grow: after a delete: %s\n", touch(m + 2000, 1, 'Z'));
    printf("mapedge: grow: ftruncate: after a delete: %s\n", touch(m2 + 3000, 1, 'T'));
    printf("mapedge: grow: ftruncate: msync %s, fsync %s\n",
           ok_or_errname(msync(m2, PAGE, MS_SYNC)), ok_or_errname(fsync(fd2)));
    printf("mapedge: grow: msync %s\n", ok_or_errname(msync(m, PAGE, MS_SYNC)));
    printf("mapedge: grow: fsync %s\n", ok_or_errname(fsync(fd)));
    printf("mapedge: grow: pread sees it: %d %d\n", peek(fd, 0), peek(fd, 2000));
    printf("mapedge: grow: synced\n");
    for (;;)
        pause();
}

#define RI_LEN (64 * 1024)

/* The byte at offset k of file A (--readinto). */
static unsigned char ri_byte(size_t k) {
    return (unsigned char)(k * 11 + (k >> 12) + 5);
}

/* read() from file A into a shared mapping of a hole of file B on the same filesystem. */
static void readinto(const char *dir, int wait) {
    static char path_a[PATH_LEN], path_b[PATH_LEN], buf[RI_LEN];
    snprintf(path_a, sizeof path_a, "%s/ri-a", dir);
    snprintf(path_b, sizeof path_b, "%s/ri-b", dir);
    for (size_t k = 0; k < RI_LEN; k++)
        buf[k] = (char)ri_byte(k);
    int a = open(path_a, O_RDWR | O_CREAT | O_TRUNC, 0644);
    if (a < 0 || write(a, buf, RI_LEN) != RI_LEN || fsync(a) || lseek(a, 0, SEEK_SET))
        die("readinto file A");
    int b = open(path_b, O_RDWR | O_CREAT | O_TRUNC, 0644);
    if (b < 0 || ftruncate(b, RI_LEN))
        die("readinto file B");
    struct stat st;
    fstat(b, &st);
    printf("mapedge: readinto: B is %ld bytes, %ld blocks of 512\n", (long)st.st_size,
           (long)st.st_blocks);
    char *m = mmap(NULL, RI_LEN, PROT_READ | PROT_WRITE, MAP_SHARED, b, 0);
    if (m == MAP_FAILED)
        die("readinto mmap");
    /* First half: pages never touched (the copy's fault maps them and writes). */
    ssize_t n1 = read(a, m, RI_LEN / 2);
    /* Second half: pages mapped read-only by a read first (the copy's fault is page_mkwrite). */
    int zeros = 0;
    for (size_t k = RI_LEN / 2; k < RI_LEN; k += PAGE)
        zeros += ((volatile char *)m)[k] == 0;
    ssize_t n2 = read(a, m + RI_LEN / 2, RI_LEN / 2);
    printf("mapedge: readinto: read %ld and %ld bytes into the mapping (%d pages read as zero "
           "first)\n",
           (long)n1, (long)n2, zeros);
    printf("mapedge: readinto: msync %s, fsync %s\n", ok_or_errname(msync(m, RI_LEN, MS_SYNC)),
           ok_or_errname(fsync(b)));
    printf("mapedge: readinto: munmap %s\n", ok_or_errname(munmap(m, RI_LEN)));
    memset(buf, 0, sizeof buf);
    ssize_t got = pread(b, buf, RI_LEN, 0);
    size_t same = 0;
    for (size_t k = 0; k < RI_LEN; k++)
        same += (unsigned char)buf[k] == ri_byte(k);
    printf("mapedge: readinto: pread of B: %ld bytes, %zu of them A's\n", (long)got, same);
    if (wait) {
        printf("mapedge: readinto synced, waiting\n");
        for (;;)
            pause();
    }
    close(a);
    close(b);
    unlink(path_a);
    unlink(path_b);
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_bus;
    sa.sa_flags = SA_SIGINFO;
    sigaction(SIGBUS, &sa, NULL);
    if (argc == 3 && !strcmp(argv[1], "--writeback"))
        writeback(argv[2]);
    if (argc == 3 && !strcmp(argv[1], "--spin"))
        spin(argv[2]);
    if (argc == 4 && !strcmp(argv[1], "--enospc")) {
        if (mount(argv[2], argv[3], "ext2", 0, NULL))
            die("mount ext2");
        enospc(argv[3]);
        printf("mapedge: enospc: umount %s\n", ok_or_errname(umount(argv[3])));
        printf("mapedge: done\n");
        return 0;
    }
    if ((argc == 3 || (argc == 4 && !strcmp(argv[3], "--wait"))) &&
        !strcmp(argv[1], "--readinto")) {
        readinto(argv[2], argc == 4);
        printf("mapedge: done\n");
        return 0;
    }
    if (argc == 4 && !strcmp(argv[1], "--grow")) {
        if (mount(argv[2], argv[3], "ext2", 0, NULL))
            die("mount ext2");
        grow(argv[3]);
    }
    if (argc != 2) {
        fprintf(stderr, "usage: mapedge DIR | --writeback FILE | --spin FILE | --enospc DEV DIR"
                        " | --grow DEV DIR | --readinto DIR [--wait]\n");
        return 2;
    }
    char path[1024], small[512];
    if (mkdir(argv[1], 0755))
        die("mkdir");
    snprintf(small, sizeof small, "%s/small", argv[1]);
    if (mkdir(small, 0755))
        die("mkdir small");
    if (mount("tmpfs", small, "tmpfs", 0, "size=64k"))
        die("mount tmpfs");

    snprintf(path, sizeof path, "%s/t", argv[1]);
    truncation("disk", path);
    snprintf(path, sizeof path, "%s/t", small);
    truncation("tmpfs", path);
    snprintf(path, sizeof path, "%s/m", argv[1]);
    mtime("disk", path);
    snprintf(path, sizeof path, "%s/m", small);
    mtime("tmpfs", path);
    unlink(path);
    snprintf(path, sizeof path, "%s/t", small);
    unlink(path);
    full_tmpfs(small);

    printf("mapedge: umount %s\n", ok_or_errname(umount(small)));
    printf("mapedge: done\n");
    return 0;
}
