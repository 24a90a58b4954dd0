/* procsig: /proc/self/status's signal lines (SigQ, SigPnd, ShdPnd, SigBlk, SigIgn, SigCgt) and VmStk
 * against what the process did: it blocks SIGUSR1 and SIGUSR2, sends SIGUSR1 to itself as a process
 * (kill: the group's shared pending set, ShdPnd) and SIGUSR2 to itself as a thread (tgkill: its own,
 * SigPnd), with SIGPIPE ignored and blocked writes to a pipe without readers (the SIGPIPE is the writing
 * thread's: SigPnd; a blocked signal is queued even when ignored), catches SIGINT, then unblocks and takes both signals.
 * Then with two threads that both block SIGUSR1: kill(getpid()) leaves it in the group's set (ShdPnd of
 * both threads' /proc/self/task/TID/status, neither's SigPnd, both threads' sigpending), a tgkill to the
 * main thread adds it to that thread's own set (its SigPnd), and when the second thread unblocks it, that
 * thread takes the group's (its handler records gettid) while the main thread's own stays pending until
 * the main thread unblocks it too (Linux's shared_pending and dequeue_signal); last, a SIGUSR2 sent to the
 * process while both threads block it is taken by the second thread's sigwait. The lines are
 * printed as they are, so the output is compared between the host and the guest kernel
 * (tests/tests/guest_busybox.rs, glibc and musl). No bits are masked: the same binary makes the same
 * sigaction calls on both kernels, so the libc's own signals (glibc's and musl's internal 32-34, when it
 * sets them up at all) show the same; and every disposition and the mask are reset first, because the
 * host's test run inherits whatever its parents ignored (a shell's background job ignores SIGINT and
 * SIGQUIT; under cargo test signals 32 and 33 came ignored), through the raw system call because
 * glibc's and musl's sigaction refuse their internal signals (32-34). */
#define PROG "procsig"
#include "common.h"
#include <pthread.h>
#include <sys/resource.h>

/* Reads a whole (small) file into a static buffer; returns its length or -1. */
static char file_buf[16384];
static long slurp(const char *path) {
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    size_t n = fread(file_buf, 1, sizeof file_buf - 1, f);
    fclose(f);
    file_buf[n] = 0;
    return (long)n;
}

/* The line of the buffer starting with `key`, without its newline, or "" (at most `n` bytes). */
static void line(const char *key, char *out, size_t n) {
    size_t k = strlen(key);
    out[0] = 0;
    for (char *l = file_buf; l && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL)
        if (strncmp(l, key, k) == 0) {
            snprintf(out, n, "%.*s", (int)strcspn(l, "\n"), l);
            return;
        }
}

/* Prints the five signal-set lines of `path` (a status file) under `label`. */
static void sig_lines(const char *label, const char *path) {
    static const char *const keys[] = {"SigPnd:", "ShdPnd:", "SigBlk:", "SigIgn:", "SigCgt:"};
    char l[128];
    if (slurp(path) < 0) {
        SAY("%s: cannot read %s\n", label, path);
        return;
    }
    for (unsigned i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        line(keys[i], l, sizeof l);
        SAY("%s: %s\n", label, l);
    }
}

/* The number after `key` in the buffer, or -1. */
static long long field(const char *key) {
    char l[128];
    line(key, l, sizeof l);
    return l[0] ? strtoll(l + strlen(key), NULL, 10) : -1;
}

static volatile sig_atomic_t got_usr1, got_usr2;
static void on_signal(int sig) {
    if (sig == SIGUSR1)
        got_usr1++;
    if (sig == SIGUSR2)
        got_usr2++;
}

/* The two-thread part: who ran the SIGUSR1 handler, and the pipes the threads take turns through. */
static volatile pid_t handler_tid;
static void on_usr1_tid(int sig) {
    (void)sig;
    handler_tid = (pid_t)syscall(SYS_gettid);
}
static int to_second[2], to_main[2];
static pid_t main_tid, second_tid;

/* Waits for the other thread's turn on `fd`. */
static void await(int fd) {
    char c;
    if (read(fd, &c, 1) != 1)
        exit(1);
}
static void hand(int fd) {
    if (write(fd, "t", 1) != 1)
        exit(1);
}

/* Whether `sig` is in this thread's sigpending. */
static const char *usr_pending(int sig) {
    sigset_t p;
    sigemptyset(&p);
    sigpending(&p);
    return yes(sigismember(&p, sig) == 1);
}
static const char *usr1_pending(void) {
    return usr_pending(SIGUSR1);
}

/* Prints both threads' signal sets from their /proc/self/task/TID/status under `step`. */
static void both_threads(const char *step) {
    char path[64], label[64];
    snprintf(path, sizeof path, "/proc/self/task/%d/status", (int)main_tid);
    snprintf(label, sizeof label, "%s, main thread", step);
    sig_lines(label, path);
    snprintf(path, sizeof path, "/proc/self/task/%d/status", (int)second_tid);
    snprintf(label, sizeof label, "%s, second thread", step);
    sig_lines(label, path);
}

static void *second_thread(void *arg) {
    (void)arg;
    second_tid = (pid_t)syscall(SYS_gettid);
    hand(to_main[1]);
    await(to_second[0]); /* after the kill */
    SAY("after kill, SIGUSR1 in the second thread's sigpending: %s\n", usr1_pending());
    hand(to_main[1]);
    await(to_second[0]); /* after the tgkill to the main thread */
    SAY("after tgkill, SIGUSR1 in the second thread's sigpending: %s\n", usr1_pending());
    sigset_t usr1;
    sigemptyset(&usr1);
    sigaddset(&usr1, SIGUSR1);
    pthread_sigmask(SIG_UNBLOCK, &usr1, NULL);
    SAY("the second thread unblocked SIGUSR1; the handler ran in it: %s\n",
        yes(handler_tid == second_tid));
    SAY("after its handler, SIGUSR1 in the second thread's sigpending: %s\n", usr1_pending());
    hand(to_main[1]);
    await(to_second[0]); /* the main thread has looked */
    /* The process's SIGUSR2 (both threads block it), taken from the group's set by sigwait. */
    sigset_t usr2;
    sigemptyset(&usr2);
    sigaddset(&usr2, SIGUSR2);
    int got = 0;
    int r = sigwait(&usr2, &got);
    SAY("sigwait in the second thread took the process's SIGUSR2: %s\n", yes(r == 0 && got == SIGUSR2));
    return NULL;
}

/* kill vs tgkill with two threads that both block SIGUSR1 (see the top of the file). */
static void two_threads(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_usr1_tid;
    sigaction(SIGUSR1, &sa, NULL);
    sigset_t usr1, usr2;
    sigemptyset(&usr1);
    sigaddset(&usr1, SIGUSR1);
    sigemptyset(&usr2);
    sigaddset(&usr2, SIGUSR2);
    /* The new thread inherits the mask. */
    pthread_sigmask(SIG_BLOCK, &usr1, NULL);
    pthread_sigmask(SIG_BLOCK, &usr2, NULL);
    main_tid = (pid_t)syscall(SYS_gettid);
    pthread_t t;
    if (pipe(to_second) || pipe(to_main) || pthread_create(&t, NULL, second_thread, NULL))
        exit(1);
    await(to_main[0]);

    kill(getpid(), SIGUSR1);
    both_threads("kill");
    SAY("after kill, SIGUSR1 in the main thread's sigpending: %s\n", usr1_pending());
    hand(to_second[1]);
    await(to_main[0]);

    syscall(SYS_tgkill, getpid(), main_tid, SIGUSR1);
    both_threads("tgkill");
    hand(to_second[1]);
    await(to_main[0]);

    both_threads("taken");
    SAY("after the second thread took it, SIGUSR1 in the main thread's sigpending: %s\n",
        usr1_pending());
    hand(to_second[1]);
    kill(getpid(), SIGUSR2);
    pthread_join(t, NULL);
    SAY("then SIGUSR2 in the main thread's sigpending: %s\n", usr_pending(SIGUSR2));
    pthread_sigmask(SIG_UNBLOCK, &usr2, NULL);

    /* The main thread's own SIGUSR1 is still there: unblocking runs the handler here. */
    handler_tid = 0;
    pthread_sigmask(SIG_UNBLOCK, &usr1, NULL);
    SAY("the main thread unblocked SIGUSR1; its own ran the handler in it: %s\n",
        yes(handler_tid == main_tid));
    SAY("then SIGUSR1 in the main thread's sigpending: %s\n", usr1_pending());
    for (int i = 0; i < 2; i++) {
        close(to_second[i]);
        close(to_main[i]);
    }
}

int main(void) {
    /* A known start: every signal at SIG_DFL (the kernel's struct sigaction: handler, flags,
     * restorer, mask; SIGKILL and SIGSTOP refuse, and are at SIG_DFL anyway), nothing blocked. */
    struct {
        unsigned long handler, flags, restorer, mask;
    } dfl = {0, 0, 0, 0};
    for (int sig = 1; sig <= 64; sig++)
        syscall(SYS_rt_sigaction, sig, &dfl, NULL, sizeof dfl.mask);
    sigset_t set;
    sigemptyset(&set);
    sigprocmask(SIG_SETMASK, &set, NULL);
    sig_lines("start", "/proc/self/status");

    signal(SIGPIPE, SIG_IGN);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaddset(&set, SIGUSR1);
    sigaddset(&set, SIGUSR2);
    sigaddset(&set, SIGPIPE);
    sigprocmask(SIG_BLOCK, &set, NULL);
    kill(getpid(), SIGUSR1);
    syscall(SYS_tgkill, getpid(), (pid_t)syscall(SYS_gettid), SIGUSR2);
    int broken[2];
    if (pipe(broken))
        return 1;
    close(broken[0]);
    SAY("write to a pipe without readers: %s\n", err(write(broken[1], "x", 1)));
    close(broken[1]);
    sig_lines("pending", "/proc/self/status");
    /* The thread's own file: the same sets (one thread), ShdPnd being the group's. */
    char task[64];
    snprintf(task, sizeof task, "/proc/self/task/%ld/status", (long)syscall(SYS_gettid));
    sig_lines("task", task);

    /* SigQ: "queued/limit": both signals count (on the host other processes of the user may add
     * theirs), the limit is RLIMIT_SIGPENDING. */
    char q[128];
    unsigned long long queued = 0, limit = 0;
    struct rlimit rl;
    slurp("/proc/self/status");
    line("SigQ:", q, sizeof q);
    int parsed = sscanf(q, "SigQ:\t%llu/%llu", &queued, &limit) == 2;
    getrlimit(RLIMIT_SIGPENDING, &rl);
    SAY("SigQ counts both signals: %s\n", yes(parsed && queued >= 2));
    SAY("SigQ limit is RLIMIT_SIGPENDING: %s\n", yes(parsed && limit == (unsigned long long)rl.rlim_cur));

    /* VmStk: the [stack] area's size in kB, as /proc/self/maps shows it. */
    long long stk = field("VmStk:");
    unsigned long long lo = 0, hi = 0;
    if (slurp("/proc/self/maps") > 0) {
        for (char *l = file_buf; l && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL) {
            size_t n = strcspn(l, "\n");
            if (n > 7 && strncmp(l + n - 7, "[stack]", 7) == 0) {
                sscanf(l, "%llx-%llx", &lo, &hi);
                break;
            }
        }
    }
    SAY("VmStk > 0: %s\n", yes(stk > 0));
    SAY("VmStk is the [stack] area of maps: %s\n", yes(hi > lo && stk == (long long)((hi - lo) / 1024)));

    /* Caught and delivered: nothing pending, the handlers in SigCgt. */
    sigaction(SIGUSR1, &sa, NULL);
    sigaction(SIGUSR2, &sa, NULL);
    sigprocmask(SIG_UNBLOCK, &set, NULL);
    SAY("delivered: SIGUSR1 %d, SIGUSR2 %d\n", (int)got_usr1, (int)got_usr2);
    sig_lines("after", "/proc/self/status");

    two_threads();
    sigaction(SIGUSR1, &sa, NULL);

    /* A second process's view: the child reads its parent's file (nothing pending, same sets), once
     * the parent is back from fork (the libcs block every signal around the fork system call). */
    int go[2];
    if (pipe(go))
        return 1;
    pid_t parent = getpid(), child = fork();
    if (child == 0) {
        char path[64], c;
        if (read(go[0], &c, 1) != 1)
            _exit(1);
        snprintf(path, sizeof path, "/proc/%d/status", (int)parent);
        sig_lines("parent", path);
        _exit(0);
    }
    if (write(go[1], "g", 1) != 1)
        return 1;
    int status;
    waitpid(child, &status, 0);
    SAY("done\n");
    return 0;
}
