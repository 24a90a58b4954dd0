/* Directories and files held by their descriptors, not their names (tests/tests/guest_fs.rs): the
 * host and the guest must print the same lines.
 *
 *   dirfd DIR          in DIR (created): a directory descriptor keeps working after the directory
 *                      is renamed and moved (openat, mkdirat, fstatat, unlinkat, `..` is the new
 *                      parent, getdents lists it), fchdir into it; a directory removed while open
 *                      lists nothing and refuses new entries (ENOENT); a file unlinked while open
 *                      keeps its data for reading and writing until the last close
 *   dirfd --many DIR N create N files in DIR (created), list it (count and a checksum of the sorted
 *                      names), look some up, rename a few, unlink all, rmdir
 */
#define PROG "dirfd"
#include "common.h"
#include <dirent.h>
#include <stdint.h>
#include <sys/stat.h>

static int cmp(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The names in directory descriptor `fd` (from its start), sorted, without . and .., joined by
 * spaces into `out`; returns how many there were (-1 with errno set when getdents64 fails) and puts
 * the count of . and .. in *dots. */
static int list(int fd, char *out, size_t n, int *dots) {
    char buf[8192];
    char *names[256];
    int count = 0;
    *dots = 0;
    if (lseek(fd, 0, SEEK_SET) < 0)
        die_path("lseek", "dir");
    for (;;) {
        long got = syscall(SYS_getdents64, fd, buf, sizeof buf);
        if (got < 0)
            return -1;
        if (got == 0)
            break;
        for (long off = 0; off < got;) {
            struct {
                uint64_t ino;
                int64_t off;
                unsigned short reclen;
                unsigned char type;
                char name[];
            } *d = (void *)(buf + off);
            if (!strcmp(d->name, ".") || !strcmp(d->name, ".."))
                (*dots)++;
            else if (count < 256)
                names[count++] = strdup(d->name);
            off += d->reclen;
        }
    }
    qsort(names, count, sizeof names[0], cmp);
    out[0] = 0;
    for (int k = 0; k < count; k++) {
        if (k)
            strncat(out, " ", n - strlen(out) - 1);
        strncat(out, names[k], n - strlen(out) - 1);
        free(names[k]);
    }
    return count;
}

static void put(int dfd, const char *name, const char *text) {
    int fd = openat(dfd, name, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0 || write(fd, text, strlen(text)) != (ssize_t)strlen(text))
        die_path("write", name);
    close(fd);
}

/* The contents of `name` under `dfd` (at most 255 bytes), or the error. */
static const char *get(int dfd, const char *name) {
    static char buf[256];
    int fd = openat(dfd, name, O_RDONLY);
    if (fd < 0)
        return ok_or_errname(fd);
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    buf[n < 0 ? 0 : n] = 0;
    return buf;
}

/* The working directory relative to `top` ("." for top itself), or getcwd's error. */
static const char *cwd_in(const char *top) {
    static char buf[1024];
    if (!getcwd(buf, sizeof buf))
        return ok_or_errname(-1);
    size_t n = strlen(top);
    if (strncmp(buf, top, n))
        return buf;
    return buf[n] ? buf + n : ".";
}

static uint64_t fnv(const void *p, size_t n, uint64_t h) {
    const unsigned char *b = p;
    for (size_t k = 0; k < n; k++) {
        h ^= b[k];
        h *= 1099511628211ull;
    }
    return h;
}

static void held_by_descriptor(const char *top) {
    char p[512], q[512], names[4096];
    int dots;
    struct stat st;
    if (mkdir(top, 0755))
        die_path("mkdir", top);
    int topfd = open(top, O_RDONLY | O_DIRECTORY);
    if (topfd < 0)
        die_path("open", top);
    if (mkdirat(topfd, "a", 0755) || mkdirat(topfd, "b", 0755) || mkdirat(topfd, "a/sub", 0755))
        die_path("mkdirat", "a b a/sub");
    put(topfd, "a/marker", "in a");
    put(topfd, "b/marker", "in b");

    /* A descriptor of a/sub, then a/sub renamed to b/moved: it still names the directory. */
    int dfd = openat(topfd, "a/sub", O_RDONLY | O_DIRECTORY);
    if (dfd < 0)
        die_path("openat", "a/sub");
    put(dfd, "before", "written before the move");
    if (renameat(topfd, "a/sub", topfd, "b/moved"))
        die_path("renameat", "a/sub -> b/moved");
    put(dfd, "after", "written after the move");
    /* One call per line: get() returns what the next call overwrites. */
    printf("dirfd: moved: before=[%s]\n", get(dfd, "before"));
    printf("dirfd: moved: after=[%s]\n", get(dfd, "after"));
    printf("dirfd: moved: by its new name=[%s]\n", get(topfd, "b/moved/after"));
    printf("dirfd: moved: by its old name %s\n", ok_or_errname(openat(topfd, "a/sub/after", O_RDONLY)));
    printf("dirfd: moved: ../marker=[%s]\n", get(dfd, "../marker"));
    int r = fstatat(dfd, "after", &st, 0);
    printf("dirfd: moved: fstatat after %s size %ld\n", ok_or_errname(r), r ? -1L : (long)st.st_size);
    printf("dirfd: moved: mkdirat %s\n", ok_or_errname(mkdirat(dfd, "made", 0700)));
    printf("dirfd: moved: unlinkat before %s\n", ok_or_errname(unlinkat(dfd, "before", 0)));
    printf("dirfd: moved: unlinkat again %s\n", ok_or_errname(unlinkat(dfd, "before", 0)));
    printf("dirfd: moved: renameat within %s\n", ok_or_errname(renameat(dfd, "after", dfd, "made/after")));
    int n = list(dfd, names, sizeof names, &dots);
    printf("dirfd: moved: getdents %d entries [%s] and %d dots\n", n, names, dots);

    /* fchdir into the descriptor of the moved directory. */
    if (fchdir(dfd))
        die_path("fchdir", "moved");
    printf("dirfd: fchdir: made/after=[%s]\n", get(AT_FDCWD, "made/after"));
    printf("dirfd: fchdir: getcwd [%s]\n", cwd_in(top));
    /* The working directory moved again: relative paths, `..` and getcwd follow it. */
    if (renameat(topfd, "b/moved", topfd, "moved2"))
        die_path("renameat", "b/moved -> moved2");
    printf("dirfd: cwd moved: getcwd [%s]\n", cwd_in(top));
    printf("dirfd: cwd moved: made/after=[%s]\n", get(AT_FDCWD, "made/after"));
    printf("dirfd: cwd moved: ../a/marker=[%s]\n", get(AT_FDCWD, "../a/marker"));
    printf("dirfd: cwd moved: chdir .. %s\n", ok_or_errname(chdir("..")));
    printf("dirfd: cwd moved: getcwd [%s]\n", cwd_in(top));
    /* The working directory removed: getcwd is ENOENT, creating in it too. */
    if (mkdirat(topfd, "doomed-cwd", 0755) || chdir("doomed-cwd"))
        die_path("chdir", "doomed-cwd");
    printf("dirfd: cwd removed: rmdir %s\n", ok_or_errname(unlinkat(topfd, "doomed-cwd", AT_REMOVEDIR)));
    printf("dirfd: cwd removed: getcwd [%s]\n", cwd_in(top));
    printf("dirfd: cwd removed: create %s\n", ok_or_errname(open("new", O_WRONLY | O_CREAT, 0644)));
    if (chdir("/"))
        die_path("chdir", "/");

    /* A directory removed while open: nothing listed, no new entries, nlink 0. */
    if (mkdirat(topfd, "doomed", 0755))
        die_path("mkdirat", "doomed");
    int gone = openat(topfd, "doomed", O_RDONLY | O_DIRECTORY);
    if (gone < 0)
        die_path("openat", "doomed");
    printf("dirfd: removed: rmdir %s\n", ok_or_errname(unlinkat(topfd, "doomed", AT_REMOVEDIR)));
    n = list(gone, names, sizeof names, &dots);
    printf("dirfd: removed: getdents %s\n", ok_or_errname(n));
    printf("dirfd: removed: create %s\n", ok_or_errname(openat(gone, "new", O_WRONLY | O_CREAT, 0644)));
    printf("dirfd: removed: mkdirat %s\n", ok_or_errname(mkdirat(gone, "newdir", 0755)));
    printf("dirfd: removed: lookup of . %s\n", ok_or_errname(fstatat(gone, ".", &st, 0)));
    if (fstat(gone, &st))
        die_path("fstat", "doomed");
    printf("dirfd: removed: nlink %ld, is a directory %d\n", (long)st.st_nlink, S_ISDIR(st.st_mode));
    close(gone);

    /* A file unlinked while open: read and written through its descriptors until the last one goes. */
    static unsigned char data[300 * 1024];
    for (size_t k = 0; k < sizeof data; k++)
        data[k] = (unsigned char)(k * 7 + (k >> 10));
    snprintf(p, sizeof p, "%s/unlinked", top);
    int wfd = open(p, O_RDWR | O_CREAT | O_TRUNC, 0644);
    if (wfd < 0 || write(wfd, data, sizeof data) != (ssize_t)sizeof data || fsync(wfd))
        die_path("write", p);
    int rfd = open(p, O_RDONLY);
    if (rfd < 0)
        die_path("open", p);
    if (unlink(p))
        die_path("unlink", p);
    printf("dirfd: unlinked: open by name %s\n", ok_or_errname(open(p, O_RDONLY)));
    if (fstat(rfd, &st))
        die_path("fstat", p);
    printf("dirfd: unlinked: nlink %ld size %ld\n", (long)st.st_nlink, (long)st.st_size);
    /* Another file made now must not take its inode or blocks. */
    snprintf(q, sizeof q, "%s/newcomer", top);
    int nfd = open(q, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    static unsigned char other[300 * 1024];
    memset(other, 0x5a, sizeof other);
    if (nfd < 0 || write(nfd, other, sizeof other) != (ssize_t)sizeof other || fsync(nfd))
        die_path("write", q);
    close(nfd);
    if (pwrite(wfd, "changed", 7, 1000) != 7)
        die_path("pwrite", p);
    close(wfd);
    memcpy(data + 1000, "changed", 7);
    static unsigned char back[300 * 1024];
    ssize_t got = pread(rfd, back, sizeof back, 0);
    printf("dirfd: unlinked: read %ld bytes, same as written %d, fnv %016llx\n", (long)got,
           got == (ssize_t)sizeof data && !memcmp(back, data, sizeof data),
           (unsigned long long)fnv(back, got < 0 ? 0 : (size_t)got, 1469598103934665603ull));
    close(rfd);
    n = list(topfd, names, sizeof names, &dots);
    printf("dirfd: top: %d entries [%s]\n", n, names);
    close(dfd);
    close(topfd);
    printf("dirfd: done\n");
}

/* N files in one directory: the listing, lookups, renames, and every one unlinked again. */
static void many(const char *top, int n) {
    char p[512], q[512];
    if (mkdir(top, 0755))
        die_path("mkdir", top);
    for (int i = 0; i < n; i++) {
        snprintf(p, sizeof p, "%s/entry-with-a-longish-name-%05d", top, i);
        int fd = open(p, O_WRONLY | O_CREAT | O_EXCL, 0644);
        if (fd < 0)
            die_path("create", p);
        if (i % 100 == 0 && write(fd, p, strlen(p)) != (ssize_t)strlen(p))
            die_path("write", p);
        close(fd);
    }
    for (int i = 0; i < n; i += 7) {
        snprintf(p, sizeof p, "%s/entry-with-a-longish-name-%05d", top, i);
        snprintf(q, sizeof q, "%s/r%05d", top, i);
        if (rename(p, q))
            die_path("rename", p);
    }
    DIR *d = opendir(top);
    if (!d)
        die_path("opendir", top);
    char **names = malloc(sizeof(char *) * (size_t)(n + 2));
    int count = 0, dots = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            dots++;
        else if (count < n + 2)
            names[count++] = strdup(e->d_name);
    }
    closedir(d);
    qsort(names, count, sizeof names[0], cmp);
    uint64_t h = 1469598103934665603ull;
    for (int k = 0; k < count; k++)
        h = fnv(names[k], strlen(names[k]) + 1, h);
    printf("dirfd: many: %d entries and %d dots, names fnv %016llx, first %s last %s\n", count, dots,
           (unsigned long long)h, count ? names[0] : "-", count ? names[count - 1] : "-");
    struct stat st;
    int found = 0;
    for (int i = 0; i < n; i += n / 10 + 1) {
        snprintf(p, sizeof p, "%s/%s%05d", top, i % 7 ? "entry-with-a-longish-name-" : "r", i);
        found += stat(p, &st) == 0;
    }
    snprintf(p, sizeof p, "%s/entry-with-a-longish-name-%05d", top, n);
    printf("dirfd: many: %d of the looked-up names found, one past the end %s\n", found,
           ok_or_errname(stat(p, &st)));
    printf("dirfd: many: rmdir while full %s\n", ok_or_errname(rmdir(top)));
    int removed = 0;
    for (int k = 0; k < count; k++) {
        snprintf(p, sizeof p, "%s/%s", top, names[k]);
        removed += unlink(p) == 0;
        free(names[k]);
    }
    free(names);
    printf("dirfd: many: unlinked %d, rmdir %s\n", removed, ok_or_errname(rmdir(top)));
    printf("dirfd: done\n");
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc == 4 && !strcmp(argv[1], "--many")) {
        many(argv[2], atoi(argv[3]));
        return 0;
    }
    if (argc != 2) {
        fprintf(stderr, "usage: dirfd DIR | dirfd --many DIR N\n");
        return 2;
    }
    held_by_descriptor(argv[1]);
    return 0;
}
