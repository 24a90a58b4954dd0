/* execthread: execve from a thread and the children of a leader that exits before its threads
 * (tests/tests/guest_threads.rs, glibc and musl, host and guest; Linux's de_thread and
 * forget_original_parent).
 *   - a thread (not the leader) execs while the leader waits in pthread_join and a third thread
 *     sleeps: the new image runs with the group's pid as its tid, alone in the group, with the same
 *     parent; a child forked before the exec is still its child; the parent's wait4 reports the group
 *     once, with the new image's exit status.
 *   - the same after the leader has already gone (pthread_exit).
 *   - the leader exits (pthread_exit) while a thread lives on: a child it forked keeps the group as
 *     its parent (getppid) and the thread reaps it. */
#define PROG "execthread"
#include "common.h"
#include <dirent.h>
#include <pthread.h>

static char *self;
static pid_t group;

static int threads_in_group(void) {
    DIR *d = opendir("/proc/self/task");
    if (!d)
        return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        n += e->d_name[0] != '.';
    closedir(d);
    return n;
}

/* The image the thread execs: argv = self, "after", group pid, parent pid, grandchild pid. */
static int after_exec(char **argv) {
    pid_t was = atoi(argv[2]), parent = atoi(argv[3]), kid = atoi(argv[4]);
    SAY("after exec: pid is the group's: %s, tid is the pid: %s, threads: %d, same parent: %s\n",
        getpid() == was ? "yes" : "no", gettid_() == getpid() ? "yes" : "no", threads_in_group(),
        getppid() == parent ? "yes" : "no");
    int st = 0;
    pid_t w = waitpid(kid, &st, 0);
    SAY("after exec: the child forked before it is still ours: %s, exit %d\n",
        w == kid ? "yes" : "no", WIFEXITED(st) ? WEXITSTATUS(st) : -1);
    return 42;
}

static void *sleeper(void *arg) {
    (void)arg;
    for (;;)
        sleep_ms(1000);
    return NULL;
}

static int leader_gone;

static void *exec_from_thread(void *arg) {
    pid_t kid = (pid_t)(long)arg;
    if (leader_gone)
        sleep_ms(200); /* the leader's pthread_exit first */
    char g[16], p[16], k[16];
    snprintf(g, sizeof g, "%d", (int)group);
    snprintf(p, sizeof p, "%d", (int)getppid());
    snprintf(k, sizeof k, "%d", (int)kid);
    char *argv[] = {self, "after", g, p, k, NULL};
    execv(self, argv);
    SAY("execv failed: %s\n", strerror(errno));
    exit(1);
}

/* In a child process: a thread execs (the leader still there, or gone). */
static void exec_case(int gone) {
    pid_t c = fork();
    if (c == 0) {
        group = getpid();
        leader_gone = gone;
        pid_t kid = fork();
        if (kid == 0) {
            sleep_ms(300);
            _exit(7);
        }
        pthread_t s, t;
        pthread_create(&s, NULL, sleeper, NULL);
        pthread_create(&t, NULL, exec_from_thread, (void *)(long)kid);
        if (gone)
            pthread_exit(NULL);
        pthread_join(t, NULL);
        SAY("the leader came back from pthread_join: wrong\n");
        _exit(1);
    }
    int st = 0;
    pid_t w = waitpid(c, &st, 0);
    pid_t again = waitpid(-1, &st, WNOHANG);
    SAY("%s: the parent's wait4 reports the process: %s, exit %d, once: %s\n",
        gone ? "leader gone" : "leader waiting", w == c ? "yes" : "no",
        WIFEXITED(st) ? WEXITSTATUS(st) : -1, again == -1 && errno == ECHILD ? "yes" : "no");
}

static pid_t orphan;

static void *survivor(void *arg) {
    (void)arg;
    sleep_ms(100); /* the leader exits first */
    int st = 0;
    pid_t w = waitpid(orphan, &st, 0);
    SAY("leader exited: its child's parent was still the group: %s; the thread reaped it: %s\n",
        WIFEXITED(st) && WEXITSTATUS(st) == 0 ? "yes" : "no", w == orphan ? "yes" : "no");
    exit(0);
}

/* In a child process: the leader forks a child and exits before its thread. */
static void leader_exits_first(void) {
    pid_t c = fork();
    if (c == 0) {
        group = getpid();
        orphan = fork();
        if (orphan == 0) {
            sleep_ms(1000);
            /* Exit 0 when the parent is still the group (Linux: reparented to the live thread). */
            _exit(getppid() == group ? 0 : 1);
        }
        pthread_t t;
        pthread_create(&t, NULL, survivor, NULL);
        pthread_exit(NULL);
    }
    int st = 0;
    pid_t w = waitpid(c, &st, 0);
    SAY("leader exited first: the group reported once its thread exited: %s, exit %d\n",
        w == c ? "yes" : "no", WIFEXITED(st) ? WEXITSTATUS(st) : -1);
}

int main(int argc, char **argv) {
    self = argv[0];
    if (argc == 5 && strcmp(argv[1], "after") == 0)
        return after_exec(argv);
    exec_case(0);
    exec_case(1);
    leader_exits_first();
    SAY("done\n");
    return 0;
}
