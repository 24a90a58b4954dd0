// A small program whose system calls are traced in the guest (`microvm trace`) and with strace on the
// host, and compared (tests/tests/introspect.rs): it opens, reads, writes, stats, forks and waits.
// Its first call is access("/tracee-start", F_OK) (ENOENT on both), so that the libc's start-up calls,
// which differ between kernels, can be cut off; the rest must give the same names and results.
// `tracee loop N` instead makes N getppid calls as fast as it can and prints the time per call: the
// flooding guest, and the measure of what tracing costs.
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <stdio.h>

static void say(const char *s) {
    if (write(1, s, strlen(s)) < 0) {
        _exit(2);
    }
}

static long long now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1000000000LL + t.tv_nsec;
}

int main(int argc, char **argv) {
    if (argc == 3 && strcmp(argv[1], "loop") == 0) {
        long n = atol(argv[2]);
        long long t0 = now_ns();
        for (long i = 0; i < n; i++) {
            getppid();
        }
        long long d = now_ns() - t0;
        printf("loop: %ld calls in %lld us, %lld ns per call\n", n, d / 1000, n ? d / n : 0);
        return 0;
    }
    access("/tracee-start", F_OK);
    struct stat st;
    if (stat("/tracee-missing", &st) == 0) {
        return 3;
    }
    if (stat("/", &st) != 0 || !S_ISDIR(st.st_mode)) {
        return 4;
    }
    // The executable itself: the first bytes of an ELF file.
    int fd = open(argv[0], O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return 5;
    }
    char magic[4];
    if (read(fd, magic, 4) != 4 || memcmp(magic, "\177ELF", 4) != 0) {
        return 6;
    }
    if (fstat(fd, &st) != 0 || lseek(fd, 0, SEEK_END) != st.st_size) {
        return 7;
    }
    close(fd);
    close(fd); // EBADF
    int p[2];
    if (pipe(p) != 0) {
        return 8;
    }
    pid_t child = fork();
    if (child == 0) {
        close(p[0]);
        if (write(p[1], "from the child\n", 15) != 15) {
            _exit(9);
        }
        _exit(7);
    }
    close(p[1]);
    char buf[32];
    ssize_t n = read(p[0], buf, sizeof buf);
    int status = 0;
    if (waitpid(child, &status, 0) != child || !WIFEXITED(status) || WEXITSTATUS(status) != 7) {
        return 10;
    }
    if (n != 15 || read(p[0], buf, sizeof buf) != 0) {
        return 11;
    }
    say("tracee: done\n");
    return 0;
}
