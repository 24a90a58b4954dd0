/* mmbench FILE [ROUNDS]: memory-call throughput, run on the host and in the guest by
 * scripts/bench-mm.sh. Prints page faults per second on a private read-only mapping of FILE (one byte
 * read per page, ROUNDS times, unmapped and mapped again in between), on fresh anonymous memory
 * (one byte written per page), and mprotect calls per second (one page flipped between read-only and
 * read-write). Sequential touches, as a program reading a mapped file does. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: mmbench FILE [ROUNDS]\n");
        return 2;
    }
    int rounds = argc > 2 ? atoi(argv[2]) : 3;
    long P = sysconf(_SC_PAGESIZE);
    int fd = open(argv[1], O_RDONLY);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0) {
        perror(argv[1]);
        return 1;
    }
    long pages = st.st_size / P;
    volatile unsigned long sum = 0;
    double t0 = now();
    for (int r = 0; r < rounds; r++) {
        unsigned char *m = mmap(NULL, pages * P, PROT_READ, MAP_PRIVATE, fd, 0);
        if (m == MAP_FAILED) {
            perror("mmap");
            return 1;
        }
        for (long i = 0; i < pages; i++)
            sum += m[i * P];
        munmap(m, pages * P);
    }
    double t = now() - t0;
    printf("mmbench: file mapping: %ld pages x %d rounds in %.3f s: %.0f faults/s\n", pages, rounds, t,
           pages * rounds / t);

    t0 = now();
    for (int r = 0; r < rounds; r++) {
        unsigned char *m = mmap(NULL, pages * P, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        for (long i = 0; i < pages; i++)
            m[i * P] = 1;
        munmap(m, pages * P);
    }
    t = now() - t0;
    printf("mmbench: anonymous memory: %ld pages x %d rounds in %.3f s: %.0f faults/s\n", pages, rounds, t,
           pages * rounds / t);

    unsigned char *p = mmap(NULL, P, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    p[0] = 1;
    int n = 200 * rounds;
    t0 = now();
    for (int i = 0; i < n; i++)
        mprotect(p, P, i % 2 ? PROT_READ | PROT_WRITE : PROT_READ);
    t = now() - t0;
    printf("mmbench: mprotect: %d calls in %.3f s: %.0f calls/s\n", n, t, n / t);
    return (int)(sum & 0);
}
