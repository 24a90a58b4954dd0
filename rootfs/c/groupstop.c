/* groupstop: group-wide stop and continue (Linux's group stop; tests/tests/guest_threads.rs, glibc
 * and musl, host and guest).
 *   - SIGSTOP to a process of five threads (the leader in pthread_join, three blocked in read on a
 *     pipe, one spinning in user mode) stops all five; wait4(WUNTRACED) reports the group once with
 *     SIGSTOP; bytes written to the pipe meanwhile are not read; SIGCONT continues all five, wait4
 *     (WCONTINUED) reports it once, and the interrupted reads go on and answer.
 *   - SIGTSTP sent to one thread (tgkill) stops the whole group (WSTOPSIG 20); SIGCONT sent to
 *     another thread continues it.
 *   - The same after the leader has gone (pthread_exit): the zombie leader reports the stop and the
 *     continue.
 *   - `groupstop job`: a job of four threads for a shell's job control (Ctrl-Z, jobs, bg, fg):
 *     prints "groupstop: job ready", runs until /tmp/groupstop-go exists, joins its threads. */
#define PROG "groupstop"
#include "common.h"
#include <dirent.h>
#include <pthread.h>
#define READERS 3

static int cmd[2], rep[2];
static volatile int quit;

static void *reader(void *arg) {
    (void)arg;
    pid_t tid = gettid_();
    if (write(rep[1], &tid, sizeof tid) != sizeof tid)
        exit(90);
    for (;;) {
        char c;
        ssize_t n = read(cmd[0], &c, 1);
        if (n < 0 && errno == EINTR)
            continue;
        if (n != 1 || c == 'q')
            return NULL;
        pid_t r = -tid;
        if (write(rep[1], &r, sizeof r) != sizeof r)
            exit(91);
    }
}

static void *spinner(void *arg) {
    (void)arg;
    pid_t tid = gettid_();
    if (write(rep[1], &tid, sizeof tid) != sizeof tid)
        exit(92);
    unsigned long n = 0;
    while (!quit)
        n++;
    return (void *)n;
}

/* The child: READERS readers and a spinner; the leader joins them (or leaves first). Answers its
 * tids on `rep` as the threads start; exits 7. */
static void child(int leader_leaves) {
    pthread_t t[READERS + 1];
    for (int i = 0; i < READERS; i++)
        pthread_create(&t[i], NULL, reader, NULL);
    pthread_create(&t[READERS], NULL, spinner, NULL);
    if (leader_leaves)
        pthread_exit(NULL);
    for (int i = 0; i < READERS; i++)
        pthread_join(t[i], NULL);
    quit = 1;
    pthread_join(t[READERS], NULL);
    exit(7);
}

static pid_t read_pid(void) {
    pid_t p = 0;
    if (read(rep[0], &p, sizeof p) != sizeof p)
        return 0;
    return p;
}

/* Threads of `pid` and how many of them are stopped ('T' in /proc/PID/task/TID/stat). */
static void thread_states(pid_t pid, int *threads, int *stopped) {
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/task", pid);
    *threads = *stopped = 0;
    DIR *d = opendir(path);
    if (!d)
        return;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        char f[300], buf[512];
        snprintf(f, sizeof f, "/proc/%d/task/%s/stat", pid, e->d_name);
        int fd = open(f, O_RDONLY);
        if (fd < 0)
            continue;
        ssize_t n = read(fd, buf, sizeof buf - 1);
        close(fd);
        if (n <= 0)
            continue;
        buf[n] = 0;
        char *rp = strrchr(buf, ')');
        if (!rp || rp[1] != ' ')
            continue;
        char st = rp[2];
        if (st == 'Z' || st == 'X')
            continue;
        (*threads)++;
        *stopped += st == 'T';
    }
    closedir(d);
}

/* "yes" or "no" (common.h's yes() says "NO"). */
static const char *yes_no(int b) { return b ? "yes" : "no"; }

/* One round: stop the group with `stop` (to the process, or to thread `stop_tid`), check it, continue
 * it with SIGCONT (to the process or `cont_tid`), check the readers answer. */
static void round_(const char *name, pid_t pid, int stop, pid_t stop_tid, pid_t cont_tid) {
    if (stop_tid)
        syscall(SYS_tgkill, pid, stop_tid, stop);
    else
        kill(pid, stop);
    int st = 0;
    pid_t w = waitpid(pid, &st, WUNTRACED);
    SAY("%s: stopped: %s, signal %d\n", name, yes_no(w == pid && WIFSTOPPED(st)),
        WIFSTOPPED(st) ? WSTOPSIG(st) : -1);
    int threads, stopped;
    thread_states(pid, &threads, &stopped);
    SAY("%s: threads %d, stopped %d\n", name, threads, stopped);
    SAY("%s: reported once: %s\n", name, yes_no(waitpid(pid, &st, WUNTRACED | WNOHANG) == 0));
    /* Work for the readers while they are stopped: nobody may take it. */
    if (write(cmd[1], "xxx", READERS) != READERS)
        SAY("write failed\n");
    sleep_ms(150);
    int fl = fcntl(rep[0], F_GETFL);
    fcntl(rep[0], F_SETFL, fl | O_NONBLOCK);
    pid_t r;
    ssize_t n = read(rep[0], &r, sizeof r);
    SAY("%s: no answer while stopped: %s\n", name, yes_no(n < 0 && errno == EAGAIN));
    fcntl(rep[0], F_SETFL, fl);
    if (cont_tid)
        syscall(SYS_tgkill, pid, cont_tid, SIGCONT);
    else
        kill(pid, SIGCONT);
    w = waitpid(pid, &st, WCONTINUED);
    SAY("%s: continued: %s\n", name, yes_no(w == pid && WIFCONTINUED(st)));
    SAY("%s: continue reported once: %s\n", name,
        yes_no(waitpid(pid, &st, WCONTINUED | WNOHANG) == 0));
    int answers = 0;
    for (int i = 0; i < READERS; i++)
        answers += read_pid() < 0;
    SAY("%s: answers after continue: %d\n", name, answers);
    thread_states(pid, &threads, &stopped);
    SAY("%s: threads %d, stopped %d\n", name, threads, stopped);
}

static void scenario(const char *name, int leader_leaves) {
    if (pipe(cmd) || pipe(rep))
        exit(1);
    pid_t pid = fork();
    /* Its own process group, with the parent (another group of the session) as its link: not
     * orphaned, so SIGTSTP stops it (as in a shell's job; under init it would be orphaned). */
    if (pid == 0)
        setpgid(0, 0);
    else
        setpgid(pid, pid);
    if (pid == 0) {
        close(cmd[1]);
        close(rep[0]);
        child(leader_leaves);
    }
    close(cmd[0]);
    close(rep[1]);
    pid_t tids[READERS + 1];
    for (int i = 0; i <= READERS; i++)
        tids[i] = read_pid();
    if (leader_leaves) {
        /* Wait until the leader is gone (a zombie in /proc/PID/stat). */
        for (int i = 0; i < 2000; i++) {
            char f[64], buf[256];
            snprintf(f, sizeof f, "/proc/%d/stat", pid);
            int fd = open(f, O_RDONLY);
            ssize_t n = fd < 0 ? -1 : read(fd, buf, sizeof buf - 1);
            if (fd >= 0)
                close(fd);
            if (n > 0) {
                buf[n] = 0;
                char *rp = strrchr(buf, ')');
                if (rp && rp[2] == 'Z')
                    break;
            }
            sleep_ms(5);
        }
    }
    round_(name, pid, SIGSTOP, 0, 0);
    char tname[64];
    snprintf(tname, sizeof tname, "%s, thread-directed", name);
    round_(tname, pid, SIGTSTP, tids[1], tids[2]);
    /* End: the readers quit, then the spinner (through the leader, or a signal when it is gone). */
    if (write(cmd[1], "qqq", READERS) != READERS)
        SAY("write failed\n");
    int st = 0;
    if (leader_leaves) {
        /* The spinner never ends, and musl's readers cannot exit either once the leader left
         * (pthread_exit of the main thread of a forked child keeps musl's thread-list lock, on
         * Linux too): end the group with SIGTERM. */
        kill(pid, SIGTERM);
    }
    pid_t w = waitpid(pid, &st, 0);
    SAY("%s: end: %s, %s %d\n", name, yes_no(w == pid),
        WIFEXITED(st) ? "exit" : "signal", WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st));
    close(cmd[1]);
    close(rep[0]);
}

/* A job with threads for a shell's job control: runs until /tmp/groupstop-go exists. */
static void *job_thread(void *arg) {
    (void)arg;
    while (!quit)
        sleep_ms(100);
    return NULL;
}

static int job(void) {
    pthread_t t[3];
    for (int i = 0; i < 3; i++)
        pthread_create(&t[i], NULL, job_thread, NULL);
    SAY("job ready\n");
    while (access("/tmp/groupstop-go", F_OK) != 0)
        sleep_ms(50);
    quit = 1;
    int n = 0;
    for (int i = 0; i < 3; i++)
        n += pthread_join(t[i], NULL) == 0;
    SAY("job threads joined %d\n", n);
    return 0;
}

int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "job") == 0)
        return job();
    scenario("leader joins", 0);
    scenario("leader gone", 1);
    SAY("done\n");
    return 0;
}
