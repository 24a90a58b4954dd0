/* A writable file system, checked differentially (tests/tests/guest_fs.rs): in directory DIR
 * (created), make D directories holding N files in all, write them (sizes from a few bytes to
 * 200 KiB, in uneven pieces, with O_APPEND, pwrite and ftruncate), rename a third of them across
 * directories, delete a fifth, hard-link and symlink some, try the calls that must fail (EEXIST,
 * ENOTEMPTY, EISDIR, ENOTDIR, ENAMETOOLONG, EINVAL, ELOOP, ENOENT), fsync one file, then print a
 * sorted listing with sizes, link counts and FNV-1a checksums. The host and the guest must print
 * the same lines.
 *
 *   fstest DIR [N [D]]    (defaults: 2000 files in 20 directories)
 *   fstest --durable FILE KIB   write KIB KiB of pattern, fsync, print "synced", then wait forever
 *   fstest --writeback FILE KIB the same pattern without fsync: print whether /proc/meminfo shows
 *                               it Dirty, wait (up to 60 s) until Dirty is 0 (the kernel's periodic
 *                               write-back), print "written back", then wait forever
 *   fstest --fill DIR           fill the disk to ENOSPC, delete, write again
 *   fstest --read FILE          read FILE whole and print the errno (EIO for a corrupt one)
 *   fstest --blk DEV            write 0xa5 over DEV's first MiB and 0x5a over the second (unaligned
 *                               pieces), fsync, read both back, print DEV's size
 */
#define PROG "fstest"
#include "common.h"
#include <dirent.h>
#include <stdint.h>
#include <sys/stat.h>

static const char *top;
static int nfiles = 2000, ndirs = 20;

/* The content of file i: a deterministic byte pattern. */
static unsigned char byte_at(int i, size_t k) {
    uint32_t x = (uint32_t)(k * 2654435761u) ^ (uint32_t)(i * 40503u);
    return (unsigned char)(x >> 11);
}

static size_t size_of_file(int i) {
    if (i % 97 == 0)
        return 200 * 1024 + i; /* indirect blocks */
    return (size_t)(i * 37 % 3000);
}

static void path_of(char *out, size_t n, int dir, const char *name) {
    snprintf(out, n, "%s/d%02d/%s", top, dir, name);
}

static void write_file(int i) {
    char p[512], name[32];
    snprintf(name, sizeof name, "f%04d", i);
    path_of(p, sizeof p, i % ndirs, name);
    int fd = open(p, O_WRONLY | O_CREAT | O_EXCL, 0644);
    if (fd < 0)
        die_path("create", p);
    size_t size = size_of_file(i), done = 0;
    static unsigned char buf[256 * 1024];
    for (size_t k = 0; k < size; k++)
        buf[k] = byte_at(i, k);
    while (done < size) {
        size_t step = size - done;
        if (step > 1000 + (done % 5000))
            step = 1000 + (done % 5000);
        if (write(fd, buf + done, step) != (ssize_t)step)
            die_path("write", p);
        done += step;
    }
    close(fd);
}

static uint64_t fnv(const unsigned char *b, size_t n, uint64_t h) {
    for (size_t k = 0; k < n; k++) {
        h ^= b[k];
        h *= 1099511628211ull;
    }
    return h;
}

static int cmp(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Lists directory `rel` (under top) sorted, recursing into subdirectories. */
static void list(const char *rel) {
    char p[1024];
    snprintf(p, sizeof p, "%s%s", top, rel);
    DIR *d = opendir(p);
    if (!d)
        die_path("opendir", p);
    char **names = NULL;
    size_t n = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        names = realloc(names, (n + 1) * sizeof *names);
        names[n++] = strdup(e->d_name);
    }
    closedir(d);
    qsort(names, n, sizeof *names, cmp);
    for (size_t k = 0; k < n; k++) {
        char sub[1024], full[1200];
        snprintf(sub, sizeof sub, "%s/%s", rel, names[k]);
        snprintf(full, sizeof full, "%s%s", top, sub);
        struct stat st;
        if (lstat(full, &st))
            die_path("lstat", full);
        if (S_ISDIR(st.st_mode)) {
            printf("fstest: %s dir %o\n", sub, st.st_mode & 07777);
            list(sub);
        } else if (S_ISLNK(st.st_mode)) {
            char t[512];
            ssize_t l = readlink(full, t, sizeof t - 1);
            if (l < 0)
                die_path("readlink", full);
            t[l] = 0;
            printf("fstest: %s link -> %s\n", sub, t);
        } else {
            int fd = open(full, O_RDONLY);
            if (fd < 0)
                die_path("open", full);
            uint64_t h = 14695981039346656037ull;
            unsigned char buf[8192];
            ssize_t r;
            off_t total = 0;
            while ((r = read(fd, buf, sizeof buf)) > 0) {
                h = fnv(buf, (size_t)r, h);
                total += r;
            }
            close(fd);
            if (total != st.st_size)
                die_path("size", full);
            printf("fstest: %s file %o size %lld links %ld fnv %016llx\n", sub, st.st_mode & 07777,
                   (long long)st.st_size, (long)st.st_nlink, (unsigned long long)h);
        }
        free(names[k]);
    }
    free(names);
}

/* Prints the errno a call left (0 for success). */
static void expect(const char *what, int r) {
    printf("fstest: %s -> %d\n", what, r < 0 ? errno : 0);
}

/* The pattern byte k of the durability file. */
static unsigned char durable_byte(size_t k) {
    return (unsigned char)((k * 131) ^ (k >> 9));
}

/* Creates `path` with `kib` KiB of the durability pattern; returns its descriptor and size. */
static int write_pattern(const char *path, long kib, size_t *size) {
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0)
        die_path("create", path);
    static unsigned char buf[65536];
    size_t total = (size_t)kib * 1024, done = 0;
    while (done < total) {
        size_t n = total - done < sizeof buf ? total - done : sizeof buf;
        for (size_t k = 0; k < n; k++)
            buf[k] = durable_byte(done + k);
        if (write(fd, buf, n) != (ssize_t)n)
            die_path("write", path);
        done += n;
    }
    *size = total;
    return fd;
}

static _Noreturn void durable(const char *path, long kib) {
    size_t total;
    int fd = write_pattern(path, kib, &total);
    if (fsync(fd))
        die_path("fsync", path);
    printf("fstest: synced %zu bytes\n", total);
    for (;;)
        pause();
}

/* Dirty: from /proc/meminfo, in kB (-1 if absent). */
static long dirty_kb(void) {
    FILE *f = fopen("/proc/meminfo", "r");
    char line[128];
    long kb = -1;
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "Dirty: %ld kB", &kb) == 1)
            break;
    if (f)
        fclose(f);
    return kb;
}

static _Noreturn void writeback(const char *path, long kib) {
    size_t total;
    write_pattern(path, kib, &total);
    long d = dirty_kb();
    printf("fstest: wrote %zu bytes, dirty %s\n", total, d >= (long)kib ? "yes" : "no");
    fflush(stdout);
    for (int i = 0; i < 600 && dirty_kb() != 0; i++)
        usleep(100000);
    printf("fstest: written back: dirty %ld kB\n", dirty_kb());
    fflush(stdout);
    for (;;)
        pause();
}

/* Writes FILE in 64 KiB pieces until the disk is full; returns the bytes written. */
static long long fill(const char *path) {
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0)
        die_path("create", path);
    static unsigned char buf[65536];
    memset(buf, 0x5a, sizeof buf);
    long long total = 0;
    for (;;) {
        ssize_t n = write(fd, buf, sizeof buf);
        if (n < 0) {
            printf("fstest: fill stopped with errno %d\n", errno);
            break;
        }
        total += n;
    }
    close(fd);
    return total;
}

static int fill_disk(const char *dir) {
    if (mkdir(dir, 0755))
        die_path("mkdir", dir);
    char a[512], b[512];
    snprintf(a, sizeof a, "%s/filler", dir);
    snprintf(b, sizeof b, "%s/again", dir);
    long long first = fill(a);
    printf("fstest: filled %s\n", first > 0 ? "some" : "nothing");
    int fd = open(b, O_WRONLY | O_CREAT, 0644);
    if (fd >= 0) {
        errno = 0;
        ssize_t n = write(fd, "x", 1);
        printf("fstest: one more byte -> %s %d\n", n == 1 ? "written" : "refused", errno);
        close(fd);
    }
    if (unlink(a))
        die_path("unlink", a);
    fd = open(b, O_WRONLY | O_TRUNC);
    static unsigned char buf[100000];
    if (fd < 0 || write(fd, buf, sizeof buf) != (ssize_t)sizeof buf)
        die_path("write after delete", b);
    close(fd);
    sync();
    printf("fstest: wrote again after the delete\n");
    printf("fstest: done\n");
    return 0;
}

static int read_whole(const char *path) {
    int fd = open(path, O_RDONLY);
    if (fd < 0) {
        printf("fstest: open -> %d\n", errno);
        return 0;
    }
    static unsigned char buf[65536];
    ssize_t n;
    while ((n = read(fd, buf, sizeof buf)) > 0)
        ;
    printf("fstest: read -> %d\n", n < 0 ? errno : 0);
    printf("fstest: done\n");
    return 0;
}

static int blk(const char *dev) {
    int fd = open(dev, O_RDWR);
    if (fd < 0)
        die_path("open", dev);
    off_t size = lseek(fd, 0, SEEK_END);
    printf("fstest: %s has %lld bytes\n", dev, (long long)size);
    static unsigned char buf[1 << 20];
    memset(buf, 0xa5, sizeof buf);
    /* 1000 bytes, then the rest of the first MiB at an odd offset, then the second MiB. */
    if (pwrite(fd, buf, 1000, 0) != 1000 || pwrite(fd, buf, (1 << 20) - 1000, 1000) != (1 << 20) - 1000)
        die_path("pwrite", dev);
    memset(buf, 0x5a, sizeof buf);
    if (lseek(fd, 1 << 20, SEEK_SET) != 1 << 20 || write(fd, buf, sizeof buf) != (ssize_t)sizeof buf)
        die_path("write", dev);
    if (fsync(fd))
        die_path("fsync", dev);
    for (int half = 0; half < 2; half++) {
        if (pread(fd, buf, sizeof buf, (off_t)half << 20) != (ssize_t)sizeof buf)
            die_path("pread", dev);
        for (size_t k = 0; k < sizeof buf; k++)
            if (buf[k] != (half ? 0x5a : 0xa5))
                die_path("read back", dev);
    }
    errno = 0;
    printf("fstest: write at the end -> %d\n", pwrite(fd, buf, 1, size) < 0 ? errno : 0);
    close(fd);
    printf("fstest: blk ok\n");
    printf("fstest: done\n");
    return 0;
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc == 3 && !strcmp(argv[1], "--blk"))
        return blk(argv[2]);
    if (argc == 4 && !strcmp(argv[1], "--durable"))
        durable(argv[2], atol(argv[3]));
    if (argc == 4 && !strcmp(argv[1], "--writeback"))
        writeback(argv[2], atol(argv[3]));
    if (argc == 3 && !strcmp(argv[1], "--fill"))
        return fill_disk(argv[2]);
    if (argc == 3 && !strcmp(argv[1], "--read"))
        return read_whole(argv[2]);
    if (argc < 2) {
        fprintf(stderr, "usage: fstest DIR [N [D]]\n");
        return 2;
    }
    top = argv[1];
    if (argc > 2)
        nfiles = atoi(argv[2]);
    if (argc > 3)
        ndirs = atoi(argv[3]);
    if (ndirs < 12 || nfiles < 200) {
        fprintf(stderr, "fstest: at least 200 files in 12 directories\n");
        return 2;
    }
    umask(022);
    if (mkdir(top, 0755))
        die_path("mkdir", top);
    for (int k = 0; k < ndirs; k++) {
        char p[512];
        snprintf(p, sizeof p, "%s/d%02d", top, k);
        if (mkdir(p, k % 2 ? 0700 : 0755))
            die_path("mkdir", p);
    }
    for (int i = 0; i < nfiles; i++)
        write_file(i);
    printf("fstest: created %d files in %d directories\n", nfiles, ndirs);

    /* Rename every third file into the next directory; delete every fifth of the rest. */
    int renamed = 0, deleted = 0;
    for (int i = 0; i < nfiles; i++) {
        char from[512], to[512], name[32], newname[32];
        snprintf(name, sizeof name, "f%04d", i);
        path_of(from, sizeof from, i % ndirs, name);
        if (i % 3 == 0) {
            snprintf(newname, sizeof newname, "r%04d", i);
            path_of(to, sizeof to, (i + 1) % ndirs, newname);
            if (rename(from, to))
                die_path("rename", from);
            renamed++;
        } else if (i % 5 == 0) {
            if (unlink(from))
                die_path("unlink", from);
            deleted++;
        }
    }
    printf("fstest: renamed %d, deleted %d\n", renamed, deleted);

    /* Appends, a pwrite into the middle, truncations down and up. */
    char p[512], q[512];
    path_of(p, sizeof p, 1 % ndirs, "f0001");
    int fd = open(p, O_WRONLY | O_APPEND);
    if (fd < 0 || write(fd, "appended", 8) != 8)
        die_path("append", p);
    /* Linux's pwrite(2) BUGS: with O_APPEND the data goes to the end whatever the offset, and the
     * file offset stays where it was. */
    off_t before = lseek(fd, 0, SEEK_CUR);
    if (pwrite(fd, "PWRITE", 6, 0) != 6)
        die_path("pwrite O_APPEND", p);
    int kept = lseek(fd, 0, SEEK_CUR) == before;
    long long size = lseek(fd, 0, SEEK_END);
    printf("fstest: pwrite with O_APPEND: offset kept %d, size now %lld\n", kept, size);
    close(fd);
    path_of(p, sizeof p, 2 % ndirs, "f0002");
    fd = open(p, O_RDWR);
    if (fd < 0 || pwrite(fd, "MIDDLE", 6, 10) != 6 || ftruncate(fd, 50) || ftruncate(fd, 70000))
        die_path("pwrite/ftruncate", p);
    if (fsync(fd) || fdatasync(fd))
        die_path("fsync", p);
    close(fd);
    path_of(p, sizeof p, 194 % ndirs, "f0194");
    if (truncate(p, 5000))
        die_path("truncate", p);
    fd = open(p, O_WRONLY | O_TRUNC);
    if (fd < 0 || write(fd, "short", 5) != 5)
        die_path("O_TRUNC", p);
    close(fd);

    /* Hard links and symlinks (fast and slow), chmod. */
    path_of(p, sizeof p, 4 % ndirs, "f0004");
    path_of(q, sizeof q, 5, "hardlink");
    if (link(p, q))
        die_path("link", q);
    path_of(q, sizeof q, 5, "fast");
    if (symlink("../d04/f0004", q))
        die_path("symlink", q);
    char longt[200];
    memset(longt, 'x', 150);
    strcpy(longt + 150, "/target");
    path_of(q, sizeof q, 5, "slow");
    if (symlink(longt, q))
        die_path("symlink", q);
    if (chmod(p, 0600))
        die_path("chmod", p);

    /* What must fail. */
    path_of(p, sizeof p, 4 % ndirs, "f0004");
    expect("create existing O_EXCL", open(p, O_WRONLY | O_CREAT | O_EXCL, 0644));
    snprintf(q, sizeof q, "%s/d03", top);
    expect("rmdir non-empty", rmdir(q));
    expect("unlink directory", unlink(q));
    snprintf(q, sizeof q, "%s/d04/f0004/x", top);
    expect("mkdir under a file", mkdir(q, 0755));
    char longname[400];
    snprintf(longname, sizeof longname, "%s/", top);
    memset(longname + strlen(longname), 'n', 256);
    longname[strlen(top) + 1 + 256] = 0;
    expect("create a 256-byte name", open(longname, O_WRONLY | O_CREAT, 0644));
    snprintf(p, sizeof p, "%s/d06", top);
    snprintf(q, sizeof q, "%s/d06/inside", top);
    expect("rename a directory into itself", rename(p, q));
    path_of(p, sizeof p, 4 % ndirs, "f0004");
    path_of(q, sizeof q, 8 % ndirs, "f0008");
    expect("renameat2 RENAME_NOREPLACE",
           (int)syscall(SYS_renameat2, AT_FDCWD, p, AT_FDCWD, q, 1 /* RENAME_NOREPLACE */));
    snprintf(p, sizeof p, "%s/loop1", top);
    snprintf(q, sizeof q, "%s/loop2", top);
    if (symlink("loop2", p) || symlink("loop1", q))
        die_path("symlink loop", p);
    expect("open a symlink loop", open(p, O_RDONLY));
    snprintf(p, sizeof p, "%s/nothere/x", top);
    expect("create in a missing directory", open(p, O_WRONLY | O_CREAT, 0644));
    snprintf(p, sizeof p, "%s/d07", top);
    snprintf(q, sizeof q, "%s/d08", top);
    expect("rename a directory over a non-empty one", rename(p, q));

    /* A directory emptied and removed, a directory moved under another, *at calls from a dirfd. */
    snprintf(p, sizeof p, "%s/empty", top);
    if (mkdir(p, 0755) || rmdir(p))
        die_path("mkdir/rmdir", p);
    snprintf(p, sizeof p, "%s/d09", top);
    snprintf(q, sizeof q, "%s/d10/moved", top);
    if (rename(p, q))
        die_path("rename dir", p);
    snprintf(p, sizeof p, "%s/d11", top);
    int dfd = open(p, O_RDONLY | O_DIRECTORY);
    if (dfd < 0)
        die_path("open dir", p);
    int afd = openat(dfd, "at-file", O_WRONLY | O_CREAT, 0640);
    if (afd < 0 || write(afd, "made with openat", 16) != 16)
        die_path("openat", "at-file");
    close(afd);
    if (mkdirat(dfd, "at-dir", 0750) || renameat(dfd, "at-file", dfd, "at-dir/at-file") ||
        unlinkat(dfd, "f0011", 0))
        die_path("*at", p);
    struct stat st;
    if (fstatat(dfd, "at-dir/at-file", &st, 0) || st.st_size != 16)
        die_path("fstatat", p);
    close(dfd);
    if (chdir(p) || mkdir("rel", 0755) || symlink("rel", "rel-link"))
        die_path("relative", p);
    sync();

    list("");
    printf("fstest: done\n");
    return 0;
}
