/* File system figures, run the same on the host and in the guest (scripts/bench-fs.sh):
 * files created per second (open O_CREAT + a 100-byte write + close, in DIR), sequential write and read
 * MB/s of one MIB MiB file in 64 KiB pieces (the write ends with fsync), and the latency of fsync after
 * a 4 KiB write (p50 and max of ROUNDS); first, with COLD, the read MB/s of that file (one nothing has
 * read yet: the kernel's disk read path).
 *
 *   fsbench DIR [FILES [MIB [ROUNDS [COLD]]]]    (defaults 200 files, 4 MiB, 20 fsyncs, no cold file)
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static double now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

static int cmpd(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void fail(const char *what) {
    perror(what);
    exit(1);
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: fsbench DIR [FILES [MIB [ROUNDS]]]\n");
        return 2;
    }
    const char *dir = argv[1];
    int files = argc > 2 ? atoi(argv[2]) : 200;
    int mib = argc > 3 ? atoi(argv[3]) : 4;
    int rounds = argc > 4 ? atoi(argv[4]) : 20;
    char p[512];
    if (argc > 5) {
        /* A file nothing has read yet (the page cache is cold for it): the disk read path. */
        static char cold[65536];
        int cfd = open(argv[5], O_RDONLY);
        if (cfd < 0)
            fail("open cold file");
        double c0 = now_ms();
        long total = 0;
        ssize_t n;
        while ((n = read(cfd, cold, sizeof cold)) > 0)
            total += n;
        double ct = now_ms() - c0;
        close(cfd);
        printf("fsbench: read cold %ld KiB in %.0f ms: %.2f MB/s\n", total >> 10, ct, total / ct / 1e3);
    }
    if (mkdir(dir, 0755))
        fail("mkdir");
    static char small[100];
    memset(small, 'x', sizeof small);
    double t0 = now_ms();
    for (int i = 0; i < files; i++) {
        snprintf(p, sizeof p, "%s/f%d", dir, i);
        int fd = open(p, O_WRONLY | O_CREAT | O_EXCL, 0644);
        if (fd < 0 || write(fd, small, sizeof small) != sizeof small)
            fail("create");
        close(fd);
    }
    double t = now_ms() - t0;
    printf("fsbench: created %d files in %.0f ms: %.0f files/s\n", files, t, files / t * 1e3);

    static char buf[65536];
    memset(buf, 0x33, sizeof buf);
    snprintf(p, sizeof p, "%s/big", dir);
    int fd = open(p, O_RDWR | O_CREAT | O_TRUNC, 0644);
    if (fd < 0)
        fail("open big");
    t0 = now_ms();
    for (long done = 0; done < (long)mib << 20; done += sizeof buf)
        if (write(fd, buf, sizeof buf) != sizeof buf)
            fail("write");
    if (fsync(fd))
        fail("fsync");
    t = now_ms() - t0;
    printf("fsbench: wrote %d MiB (with fsync) in %.0f ms: %.2f MB/s\n", mib, t,
           (mib << 20) / t / 1e3);
    /* Read twice: the second pass finds the file in the page cache (the first one too on a kernel
     * that keeps written pages). */
    for (int pass = 0; pass < 2; pass++) {
        t0 = now_ms();
        lseek(fd, 0, SEEK_SET);
        long total = 0;
        ssize_t n;
        while ((n = read(fd, buf, sizeof buf)) > 0)
            total += n;
        t = now_ms() - t0;
        printf("fsbench: read%s %ld MiB in %.0f ms: %.2f MB/s\n", pass ? " again" : "", total >> 20, t,
               total / t / 1e3);
    }
    close(fd);

    double *lat = calloc(rounds, sizeof *lat);
    snprintf(p, sizeof p, "%s/sync", dir);
    fd = open(p, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    for (int i = 0; i < rounds; i++) {
        if (pwrite(fd, buf, 4096, (off_t)i * 4096) != 4096)
            fail("pwrite");
        t0 = now_ms();
        if (fsync(fd))
            fail("fsync");
        lat[i] = now_ms() - t0;
    }
    close(fd);
    qsort(lat, rounds, sizeof *lat, cmpd);
    printf("fsbench: fsync after a 4 KiB write: p50 %.2f ms, max %.2f ms (%d rounds)\n",
           lat[rounds / 2], lat[rounds - 1], rounds);
    printf("fsbench: done\n");
    return 0;
}
