/* sysagree: do the kernel's many views of one fact agree? sysinfo(2) against /proc/meminfo,
 * /proc/uptime and /proc/loadavg; /proc/stat's btime against the wall clock; uname(2) against
 * /proc/version; /proc/self/{stat,status,statm,comm,cmdline,environ,exe,cwd,fd} against the system
 * calls and each other (also after prctl(PR_SET_NAME)); /proc/filesystems against /proc/mounts;
 * /proc/cpuinfo against sysconf and sched_getaffinity; the /dev nodes' numbers and behaviour; and
 * getrandom(2)'s flags and errors. Every line says "yes" or what it is on both kernels, so the output
 * is compared between the host and the guest kernel (tests/tests/guest_busybox.rs, glibc and musl).
 * Figures that move while they are read (free memory, the load) are compared within 1% of RAM or
 * with the reading before and after; the guest is quiet and gives exact figures, the host may not. */
#define PROG "sysagree"
#include "common.h"
#include <limits.h>
#include <sched.h>
#include <sys/prctl.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/sysinfo.h>
#include <sys/sysmacros.h>
#include <sys/utsname.h>

extern char **environ;

/* Reads a whole (small) file into a static buffer; returns its length or -1. */
static char file_buf[65536];
static long slurp(const char *path) {
    int fd = open(path, O_RDONLY);
    if (fd < 0)
        return -1;
    long n = 0, r;
    while (n < (long)sizeof file_buf - 1 && (r = read(fd, file_buf + n, sizeof file_buf - 1 - n)) > 0)
        n += r;
    close(fd);
    file_buf[n] = 0;
    return n;
}

/* The number after "key" (e.g. "MemTotal:") in the file read last, or -1. */
static long long field(const char *key) {
    size_t k = strlen(key);
    for (char *l = file_buf; l && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL)
        if (strncmp(l, key, k) == 0)
            return strtoll(l + k, NULL, 10);
    return -1;
}

static long long meminfo(const char *key) {
    if (slurp("/proc/meminfo") < 0)
        return -1;
    return field(key);
}

/* Whether a and b (kB) are within 1% of RAM of each other. */
static long long ram_kb;
static int near(long long a, long long b) { return llabs(a - b) <= ram_kb / 100; }

/* /proc/loadavg's three averages as "a b c" (the text before the fourth field). */
static void loadavg_text(char *out, size_t n) {
    out[0] = 0;
    if (slurp("/proc/loadavg") < 0)
        return;
    char a[16], b[16], c[16];
    if (sscanf(file_buf, "%15s %15s %15s", a, b, c) == 3)
        snprintf(out, n, "%s %s %s", a, b, c);
}

static void check_sysinfo(void) {
    struct sysinfo si;
    char before[64], after[64], mine[64];
    double up_before = 0;
    if (slurp("/proc/uptime") >= 0)
        sscanf(file_buf, "%lf", &up_before);
    loadavg_text(before, sizeof before);
    int r = sysinfo(&si);
    loadavg_text(after, sizeof after);
    SAY("sysinfo returns %d, mem_unit set: %s\n", r, yes(si.mem_unit > 0));
    unsigned long long unit = si.mem_unit ? si.mem_unit : 1;
    ram_kb = meminfo("MemTotal:");
    SAY("sysinfo totalram is MemTotal: %s\n", yes(si.totalram * unit / 1024 == (unsigned long long)ram_kb));
    SAY("sysinfo freeram is MemFree: %s\n", yes(near(si.freeram * unit / 1024, meminfo("MemFree:"))));
    SAY("sysinfo sharedram is Shmem: %s\n", yes(near(si.sharedram * unit / 1024, meminfo("Shmem:"))));
    SAY("sysinfo bufferram is Buffers: %s\n", yes(near(si.bufferram * unit / 1024, meminfo("Buffers:"))));
    SAY("sysinfo totalswap is SwapTotal: %s\n", yes(si.totalswap * unit / 1024 == (unsigned long long)meminfo("SwapTotal:")));
    SAY("sysinfo freeswap is SwapFree: %s\n", yes(near(si.freeswap * unit / 1024, meminfo("SwapFree:"))));
    SAY("sysinfo totalhigh and freehigh: %lu %lu\n", si.totalhigh, si.freehigh);
    /* The averages as /proc/loadavg prints them: Linux keeps them with 11 fraction bits (FSHIFT),
     * sysinfo shifts them to 16, and loadavg adds FIXED_1/200 (10) before cutting to two decimals.
     * (Adding 2^16/200 to the 16-bit value instead rounded up about 1 value in 100 that loadavg
     * does not: an occasional NO on either kernel.) */
    unsigned long l[3];
    for (int i = 0; i < 3; i++)
        l[i] = (si.loads[i] >> 5) + (1UL << 11) / 200;
    snprintf(mine, sizeof mine, "%lu.%02lu %lu.%02lu %lu.%02lu", l[0] >> 11, ((l[0] & 2047) * 100) >> 11,
             l[1] >> 11, ((l[1] & 2047) * 100) >> 11, l[2] >> 11, ((l[2] & 2047) * 100) >> 11);
    SAY("sysinfo loads are /proc/loadavg's: %s\n", yes(!strcmp(mine, before) || !strcmp(mine, after)));
    /* procs: threads, as loadavg's fourth field counts them (read just after). */
    long running = 0, total = 0;
    if (slurp("/proc/loadavg") >= 0)
        sscanf(file_buf, "%*s %*s %*s %ld/%ld", &running, &total);
    SAY("sysinfo procs is loadavg's task count: %s\n", yes(labs((long)si.procs - total) <= 2 + total / 20));
    SAY("loadavg: runnable at least 1 (this one), at most all: %s\n", yes(running >= 1 && running <= total));
    /* Linux rounds sysinfo's uptime up to a whole second (and /proc/uptime's down to 10 ms). */
    double up = 0, idle = 0;
    if (slurp("/proc/uptime") >= 0)
        sscanf(file_buf, "%lf %lf", &up, &idle);
    SAY("sysinfo uptime is /proc/uptime's, rounded up: %s\n", yes(up_before < si.uptime && si.uptime <= up + 1));
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    SAY("/proc/uptime idle at most uptime times CPUs: %s\n", yes(idle <= up * cpus + 0.1));
}

static void check_meminfo(void) {
    long long total = meminfo("MemTotal:"), free = field("MemFree:"), avail = field("MemAvailable:"),
              cached = field("Cached:"), dirty = field("Dirty:"), shmem = field("Shmem:");
    SAY("meminfo: 0 < MemFree <= MemAvailable <= MemTotal: %s\n", yes(free > 0 && free <= avail && avail <= total));
    SAY("meminfo: Shmem and Dirty within Cached, Cached within MemTotal: %s\n",
        yes(shmem <= cached && dirty <= cached && cached <= total));
}

static void check_stat_and_clock(void) {
    if (slurp("/proc/stat") < 0) {
        SAY("/proc/stat: %s\n", strerror(errno));
        return;
    }
    long long btime = field("btime "), processes = field("processes "), running = field("procs_running ");
    unsigned long long cpu[10] = {0};
    int n = sscanf(file_buf, "cpu %llu %llu %llu %llu %llu %llu %llu %llu %llu %llu", &cpu[0], &cpu[1], &cpu[2],
                   &cpu[3], &cpu[4], &cpu[5], &cpu[6], &cpu[7], &cpu[8], &cpu[9]);
    unsigned long long ticks = 0;
    for (int i = 0; i < 8; i++)
        ticks += cpu[i];
    double up = 0;
    char *stat_copy = strdup(file_buf);
    if (slurp("/proc/uptime") >= 0)
        sscanf(file_buf, "%lf", &up);
    long cpus = sysconf(_SC_NPROCESSORS_ONLN), hz = sysconf(_SC_CLK_TCK);
    SAY("/proc/stat cpu line has 10 fields: %s\n", yes(n == 10));
    /* The ticks of all CPUs add up to the uptime times the CPUs (within 5% and a second each: a
     * host that is itself a VM under load accounts a few seconds late, idle ones among them). */
    double all = up * cpus, counted = (double)ticks / hz;
    SAY("/proc/stat cpu ticks add up to the uptime: %s\n",
        yes(counted <= all + cpus && counted >= all * 0.95 - cpus));
    /* Per-CPU lines: one per online CPU. */
    int lines = 0;
    for (char *l = stat_copy; l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL)
        if (strncmp(l, "cpu", 3) == 0 && l[3] >= '0' && l[3] <= '9')
            lines++;
    free(stat_copy);
    SAY("/proc/stat has a cpuN line per online CPU: %s\n", yes(lines == cpus));
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    SAY("/proc/stat btime + uptime is the wall clock: %s\n", yes(llabs(btime + (long long)up - now.tv_sec) <= 2));
    SAY("/proc/stat processes and procs_running: %s\n", yes(processes >= 1 && running >= 1));
}

static void check_uname(void) {
    struct utsname u;
    uname(&u);
    char want[512];
    snprintf(want, sizeof want, "Linux version %s (", u.release);
    long n = slurp("/proc/version");
    size_t vl = strlen(u.version);
    SAY("/proc/version names uname's release and ends with its version: %s\n",
        yes(n > 0 && !strncmp(file_buf, want, strlen(want)) && (size_t)n > vl + 1 &&
            !strncmp(file_buf + n - 1 - vl, u.version, vl) && file_buf[n - 1] == '\n'));
    SAY("uname sysname and machine: %s %s\n", u.sysname, u.machine);
}

/* /proc/self/stat's fields after the command (from field 3, the state). */
static char self_comm[64];
static char *stat_fields(void) {
    if (slurp("/proc/self/stat") < 0)
        return NULL;
    char *open = strchr(file_buf, '('), *close = strrchr(file_buf, ')');
    if (!open || !close)
        return NULL;
    snprintf(self_comm, sizeof self_comm, "%.*s", (int)(close - open - 1), open + 1);
    return close + 2;
}

/* Touches 2 MiB of stack (a frame of its own: the compiler's stack probes would otherwise touch it
 * all at the caller's entry). */
__attribute__((noinline)) static void touch_deep(void) {
    volatile char deep[2 << 20];
    deep[0] = 1;
    deep[sizeof deep - 1] = 1;
}

static void check_self(int argc, char **argv) {
    char *f = stat_fields();
    char state;
    int ppid, pgrp, session;
    sscanf(f ? f : "", "%c %d %d %d", &state, &ppid, &pgrp, &session);
    SAY("stat: pid, state R, ppid, pgrp, session as the calls say: %s\n",
        yes(f && atoi(file_buf) == getpid() && state == 'R' && ppid == getppid() && pgrp == getpgrp() &&
            session == getsid(0)));
    char comm[64] = "";
    slurp("/proc/self/comm");
    sscanf(file_buf, "%63[^\n]", comm);
    const char *base = strrchr(argv[0], '/') ? strrchr(argv[0], '/') + 1 : argv[0];
    SAY("comm is the executable's name (15 bytes at most): %s\n", yes(!strncmp(comm, base, 15) && strlen(comm) <= 15));
    SAY("comm, stat's (comm) and status Name agree: %s\n",
        yes(!strcmp(comm, self_comm) && slurp("/proc/self/status") > 0 && strstr(file_buf, "Name:\t") &&
            !strncmp(strstr(file_buf, "Name:\t") + 6, comm, strlen(comm))));
    prctl(PR_SET_NAME, "renamed-by-prctl-to-long");
    slurp("/proc/self/comm");
    SAY("after PR_SET_NAME, comm: %s", file_buf);
    stat_fields();
    SAY("after PR_SET_NAME, stat: (%s)\n", self_comm);
    slurp("/proc/self/status");
    SAY("after PR_SET_NAME, status: %.*s\n", (int)strcspn(file_buf, "\n"), file_buf);
    char name[32] = "";
    prctl(PR_GET_NAME, name);
    SAY("after PR_SET_NAME, PR_GET_NAME: %s\n", name);

    /* status and statm against each other; stat's vsize and rss too (pages of 4 KiB). */
    slurp("/proc/self/status");
    long long vmsize = field("VmSize:"), vmrss = -1;
    char *rss = strstr(file_buf, "VmRSS:");
    if (rss)
        vmrss = strtoll(rss + 6, NULL, 10);
    long pid = -1, ppid2 = -1, tgid = -1, threads = -1;
    char *p;
    if ((p = strstr(file_buf, "\nPid:")))
        pid = strtol(p + 5, NULL, 10);
    if ((p = strstr(file_buf, "\nPPid:")))
        ppid2 = strtol(p + 6, NULL, 10);
    if ((p = strstr(file_buf, "\nTgid:")))
        tgid = strtol(p + 6, NULL, 10);
    if ((p = strstr(file_buf, "\nThreads:")))
        threads = strtol(p + 9, NULL, 10);
    SAY("status Pid, Tgid, PPid, Threads: %s\n",
        yes(pid == getpid() && tgid == getpid() && ppid2 == getppid() && threads == 1));
    long long size = 0, resident = 0;
    slurp("/proc/self/statm");
    sscanf(file_buf, "%lld %lld", &size, &resident);
    long page_kb = sysconf(_SC_PAGESIZE) / 1024;
    SAY("statm size and resident are VmSize and VmRSS: %s\n",
        yes(size * page_kb == vmsize && resident * page_kb == vmrss));
    f = stat_fields();
    unsigned long long vsize = 0;
    long long rss_pages = 0;
    /* Fields 23 and 24 (vsize, rss); f starts at field 3. */
    if (f)
        sscanf(f, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %*u %*u %*d %*d %*d %*d %*d %*d %*u %llu %lld",
               &vsize, &rss_pages);
    /* Linux 6.18's stat reads the RSS counters without summing the per-CPU parts (status sums
     * them): it may be off by their batches, a few MiB at most. */
    SAY("stat vsize is VmSize, rss near VmRSS: %s\n",
        yes(vsize / 1024 == (unsigned long long)vmsize && llabs(rss_pages * page_kb - vmrss) <= 4096));

    /* The stack's area: its first pages and 128 KiB, grown on demand (not RLIMIT_STACK's 8 MiB
     * from the start). A deep touch grows it. */
    unsigned long lo = 0, hi = 0;
    slurp("/proc/self/maps");
    char *sl = strstr(file_buf, "[stack]");
    while (sl && sl > file_buf && sl[-1] != '\n')
        sl--;
    if (sl)
        sscanf(sl, "%lx-%lx", &lo, &hi);
    SAY("[stack] area under 1 MiB: %s\n", yes(hi - lo < (1 << 20)));
    touch_deep();
    slurp("/proc/self/maps");
    sl = strstr(file_buf, "[stack]");
    while (sl && sl > file_buf && sl[-1] != '\n')
        sl--;
    if (sl)
        sscanf(sl, "%lx-%lx", &lo, &hi);
    SAY("after touching 2 MiB below, [stack] over 2 MiB: %s\n", yes(hi - lo > (2 << 20)));

    /* cmdline: argv, NUL after each; environ: the environment at exec. */
    long n = slurp("/proc/self/cmdline");
    long want = 0, same = 1;
    for (int i = 0; i < argc; i++) {
        size_t l = strlen(argv[i]) + 1;
        same &= want + (long)l <= n && !memcmp(file_buf + want, argv[i], l);
        want += l;
    }
    SAY("cmdline is argv: %s\n", yes(same && n == want));
    n = slurp("/proc/self/environ");
    want = 0, same = 1;
    for (char **e = environ; *e; e++) {
        size_t l = strlen(*e) + 1;
        same &= want + (long)l <= n && !memcmp(file_buf + want, *e, l);
        want += l;
    }
    SAY("environ is the environment: %s\n", yes(same && n == want));

    char link[PATH_MAX], real[PATH_MAX], cwd[PATH_MAX];
    ssize_t ln = readlink("/proc/self/exe", link, sizeof link - 1);
    link[ln > 0 ? ln : 0] = 0;
    SAY("exe is the executable's real path: %s\n", yes(realpath(argv[0], real) && !strcmp(link, real)));
    ln = readlink("/proc/self/cwd", link, sizeof link - 1);
    link[ln > 0 ? ln : 0] = 0;
    SAY("cwd is getcwd: %s\n", yes(getcwd(cwd, sizeof cwd) && !strcmp(link, cwd)));
    /* /proc/self is a symbolic link: the working directory and a descriptor's path name its target. */
    char mine[64];
    snprintf(mine, sizeof mine, "/proc/%d/fd", getpid());
    chdir("/proc/self/fd");
    SAY("chdir /proc/self/fd, getcwd is /proc/PID/fd: %s\n", yes(getcwd(cwd, sizeof cwd) && !strcmp(cwd, mine)));
    chdir("/");

    /* fd/N: the path of a file, pipe:[inode] of a pipe. */
    int fd = open("/proc/self/status", O_RDONLY), pp[2];
    char path[64];
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    ln = readlink(path, link, sizeof link - 1);
    link[ln > 0 ? ln : 0] = 0;
    snprintf(mine, sizeof mine, "/proc/%d/status", getpid());
    SAY("fd/N of /proc/self/status is /proc/PID/status: %s\n", yes(!strcmp(link, mine)));
    close(fd);
    pipe(pp);
    struct stat st;
    fstat(pp[0], &st);
    snprintf(path, sizeof path, "/proc/self/fd/%d", pp[1]);
    ln = readlink(path, link, sizeof link - 1);
    link[ln > 0 ? ln : 0] = 0;
    char pipe_name[64];
    snprintf(pipe_name, sizeof pipe_name, "pipe:[%llu]", (unsigned long long)st.st_ino);
    SAY("fd/N of a pipe is pipe:[its inode]: %s\n", yes(!strcmp(link, pipe_name)));
    close(pp[0]);
    close(pp[1]);
}

static void check_filesystems(void) {
    if (slurp("/proc/mounts") < 0) {
        SAY("/proc/mounts: %s\n", strerror(errno));
        return;
    }
    char *mounts = strdup(file_buf);
    slurp("/proc/filesystems");
    int all = 1;
    char type[64];
    for (char *l = mounts; l && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL) {
        /* nsfs (`ip netns` bind mounts of /proc/PID/ns/net) is a mount Linux registers no type for. */
        if (sscanf(l, "%*s %*s %63s", type) != 1 || !strcmp(type, "nsfs"))
            continue;
        char want[80];
        snprintf(want, sizeof want, "\t%s\n", type);
        all &= strstr(file_buf, want) != NULL;
    }
    free(mounts);
    SAY("every mounted type is in /proc/filesystems: %s\n", yes(all));
    SAY("proc and tmpfs are nodev: %s\n", yes(strstr(file_buf, "nodev\tproc\n") && strstr(file_buf, "nodev\ttmpfs\n")));
}

static void check_cpus(void) {
    long online = sysconf(_SC_NPROCESSORS_ONLN);
    cpu_set_t set;
    CPU_ZERO(&set);
    sched_getaffinity(0, sizeof set, &set);
    int processors = 0;
    if (slurp("/proc/cpuinfo") > 0)
        for (char *l = file_buf; l && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL)
            processors += !strncmp(l, "processor\t:", 11) || !strncmp(l, "processor :", 11);
    SAY("cpuinfo processors, online CPUs and the affinity mask agree: %s\n",
        yes(processors == online && CPU_COUNT(&set) == online));
}

static void check_devices(void) {
    static const struct {
        const char *path;
        unsigned maj, min;
    } devs[] = {{"/dev/null", 1, 3},   {"/dev/zero", 1, 5}, {"/dev/full", 1, 7},
                {"/dev/random", 1, 8}, {"/dev/urandom", 1, 9}, {"/dev/tty", 5, 0}, {"/dev/console", 5, 1}};
    for (size_t i = 0; i < sizeof devs / sizeof devs[0]; i++) {
        struct stat st;
        int r = stat(devs[i].path, &st);
        SAY("%s: %s\n", devs[i].path,
            r < 0                         ? strerror(errno)
            : !S_ISCHR(st.st_mode)        ? "not a character device"
            : major(st.st_rdev) != devs[i].maj || minor(st.st_rdev) != devs[i].min ? "other numbers"
                                                                                    : "char, Linux's numbers");
    }
    char buf[4096];
    int fd = open("/dev/zero", O_RDONLY);
    memset(buf, 1, sizeof buf);
    ssize_t n = read(fd, buf, sizeof buf);
    int zeros = 1;
    for (ssize_t i = 0; i < n; i++)
        zeros &= buf[i] == 0;
    SAY("read /dev/zero: %zd, all zero: %s\n", n, yes(zeros));
    close(fd);
    fd = open("/dev/full", O_RDWR);
    errno = 0;
    n = write(fd, "x", 1);
    SAY("write /dev/full: %zd %s; ", n, errno == ENOSPC ? "ENOSPC" : "other");
    printf("read: %zd\n", read(fd, buf, 100));
    close(fd);
    fd = open("/dev/null", O_RDWR);
    SAY("write /dev/null: %zd; read: %zd\n", write(fd, buf, 100), read(fd, buf, 100));
    close(fd);
    /* ENXIO without a controlling terminal (the test runs this in a new session on both). */
    errno = 0;
    fd = open("/dev/tty", O_RDWR);
    SAY("open /dev/tty without a controlling terminal: %s\n", fd < 0 && errno == ENXIO ? "ENXIO" : "other");
    if (fd >= 0)
        close(fd);
}

static void check_getrandom(void) {
    unsigned char a[64], b[64];
    memset(a, 0, sizeof a);
    memset(b, 0, sizeof b);
    /* The raw system call: glibc and musl wrap it alike, but without surprises. */
    long ra = syscall(SYS_getrandom, a, sizeof a, 0), rb = syscall(SYS_getrandom, b, sizeof b, 0);
    int nonzero = 0;
    for (size_t i = 0; i < sizeof a; i++)
        nonzero += a[i] != 0;
    SAY("getrandom 64 twice: %ld %ld, different: %s, mostly nonzero: %s\n", ra, rb, yes(memcmp(a, b, 64) != 0),
        yes(nonzero > 48));
    SAY("getrandom GRND_NONBLOCK: %s\n", err(syscall(SYS_getrandom, a, 16, GRND_NONBLOCK)));
    SAY("getrandom GRND_RANDOM: %s\n", err(syscall(SYS_getrandom, a, 16, GRND_RANDOM)));
    SAY("getrandom GRND_INSECURE (4): %s\n", err(syscall(SYS_getrandom, a, 16, 4)));
    SAY("getrandom GRND_INSECURE|GRND_RANDOM: %s\n", err(syscall(SYS_getrandom, a, 16, 4 | GRND_RANDOM)));
    SAY("getrandom unknown flag 8: %s\n", err(syscall(SYS_getrandom, a, 16, 8)));
    SAY("getrandom length 0: %s\n", err(syscall(SYS_getrandom, a, 0, 0)));
    SAY("getrandom to NULL: %s\n", err(syscall(SYS_getrandom, NULL, 16, 0)));
    SAY("getrandom to a read-only page: %s\n", err(syscall(SYS_getrandom, (void *)check_getrandom, 16, 0)));
    size_t big = 1 << 20;
    unsigned char *m = malloc(big);
    SAY("getrandom 1 MiB: %s\n", err(syscall(SYS_getrandom, m, big, 0)));
    free(m);
}

int main(int argc, char **argv) {
    check_sysinfo();
    check_meminfo();
    check_stat_and_clock();
    check_uname();
    check_self(argc, argv);
    check_filesystems();
    check_cpus();
    check_devices();
    check_getrandom();
    SAY("done\n");
    return 0;
}
