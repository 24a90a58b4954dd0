/* threads: POSIX threads as glibc and musl make them (clone, futex, set_tid_address, robust lists),
 * printed so that the output can be compared between the host and the guest kernel
 * (tests/tests/guest_threads.rs). Cases: a 4-thread counter under a mutex with a condition variable,
 * producer/consumer with semaphores, join and detach, pid/tid, thread- and process-directed signals,
 * fork from a thread, exit of one thread vs exit of the group, a robust mutex whose owner dies,
 * memory and descriptors shared after creation, timed waits, raw futex errors. */
#define PROG "threads"
#include "common.h"
#include <dirent.h>
#include <pthread.h>
#include <semaphore.h>
#include <sys/mman.h>

/* <linux/futex.h> is not in musl-gcc's include path. */
#define FUTEX_WAIT_PRIVATE 128
#define FUTEX_WAKE_PRIVATE 129

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cond = PTHREAD_COND_INITIALIZER;
static long counter;
static int finished;

static void *count(void *arg) {
    (void)arg;
    for (int i = 0; i < 20000; i++) {
        pthread_mutex_lock(&lock);
        counter++;
        pthread_mutex_unlock(&lock);
    }
    pthread_mutex_lock(&lock);
    finished++;
    pthread_cond_signal(&cond);
    pthread_mutex_unlock(&lock);
    return NULL;
}

#define SLOTS 4
#define ITEMS 2000
static sem_t empty_slots, full_slots;
static int ring[SLOTS];

static void *produce(void *arg) {
    (void)arg;
    for (int i = 1; i <= ITEMS; i++) {
        sem_wait(&empty_slots);
        ring[i % SLOTS] = i;
        sem_post(&full_slots);
    }
    return NULL;
}

static void *square(void *arg) { return (void *)((long)arg * (long)arg); }

static sem_t detached_ran;
static void *detached(void *arg) {
    (void)arg;
    sem_post(&detached_ran);
    return NULL;
}

static volatile pid_t handler_tid;
static void on_sig(int sig) {
    (void)sig;
    handler_tid = gettid_();
}

static volatile int stop_waiter;
static pid_t waiter_tid;
static sem_t waiter_ready;
static void *unblocked_waiter(void *arg) {
    (void)arg;
    sigset_t s;
    sigemptyset(&s);
    sigaddset(&s, SIGUSR2);
    pthread_sigmask(SIG_UNBLOCK, &s, NULL);
    waiter_tid = gettid_();
    sem_post(&waiter_ready);
    while (!stop_waiter)
        usleep(1000);
    return NULL;
}

static void *sleeper(void *arg) {
    (void)arg;
    for (;;)
        pause();
    return NULL;
}

static void *sleeper_sem(void *arg) {
    sem_wait(arg);
    return NULL;
}

static void *forker(void *arg) {
    (void)arg;
    pid_t c = fork();
    if (c == 0)
        _exit(getpid() == gettid_() ? 7 : 1);
    int st;
    waitpid(c, &st, 0);
    return (void *)(long)WEXITSTATUS(st);
}

static void *exit_thread(void *arg) {
    (void)arg;
    pthread_exit((void *)42);
}

static void *exit_group_thread(void *arg) {
    (void)arg;
    usleep(20000);
    exit(5);
}

static pthread_mutex_t robust;
static void *die_holding(void *arg) {
    (void)arg;
    pthread_mutex_lock(&robust);
    return NULL;
}

static int shared_fd = -1;
static char *shared_map;
static void *use_shared(void *arg) {
    sem_t *go = arg;
    sem_wait(go);
    /* A descriptor and a mapping the main thread made after this thread started. */
    write(shared_fd, "hi", 2);
    shared_map[0] = 'T';
    return NULL;
}

int main(void) {
    pthread_t t[4];
    for (int i = 0; i < 4; i++)
        pthread_create(&t[i], NULL, count, NULL);
    pthread_mutex_lock(&lock);
    while (finished < 4)
        pthread_cond_wait(&cond, &lock);
    pthread_mutex_unlock(&lock);
    for (int i = 0; i < 4; i++)
        pthread_join(t[i], NULL);
    SAY("counter: %ld (4 x 20000 under a mutex), all signalled done: %d\n", counter, finished);

    sem_init(&empty_slots, 0, SLOTS);
    sem_init(&full_slots, 0, 0);
    pthread_t p;
    pthread_create(&p, NULL, produce, NULL);
    long sum = 0;
    for (int i = 1; i <= ITEMS; i++) {
        sem_wait(&full_slots);
        sum += ring[i % SLOTS];
        sem_post(&empty_slots);
    }
    pthread_join(p, NULL);
    SAY("producer/consumer: sum %ld (expected %d)\n", sum, ITEMS * (ITEMS + 1) / 2);

    void *r;
    pthread_t j;
    pthread_create(&j, NULL, square, (void *)12L);
    int jr = pthread_join(j, &r);
    SAY("join: %d, returned %ld\n", jr, (long)r);
    sem_init(&detached_ran, 0, 0);
    pthread_attr_t at;
    pthread_attr_init(&at);
    pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
    pthread_create(&j, &at, detached, NULL);
    sem_wait(&detached_ran);
    SAY("detached thread ran: yes\n");
    pthread_create(&j, NULL, exit_thread, NULL);
    jr = pthread_join(j, &r);
    SAY("pthread_exit value: %d %ld\n", jr, (long)r);

    /* pid and tid. */
    pid_t main_tid = gettid_();
    SAY("main thread: tid == pid: %s\n", main_tid == getpid() ? "yes" : "no");

    /* A thread-directed signal runs in that thread. */
    signal(SIGUSR1, on_sig);
    sem_init(&waiter_ready, 0, 0);
    pthread_t w;
    sigset_t usr2;
    sigemptyset(&usr2);
    sigaddset(&usr2, SIGUSR2);
    pthread_sigmask(SIG_BLOCK, &usr2, NULL);
    pthread_create(&w, NULL, unblocked_waiter, NULL);
    sem_wait(&waiter_ready);
    handler_tid = 0;
    pthread_kill(w, SIGUSR1);
    while (!handler_tid)
        usleep(1000);
    SAY("pthread_kill: handler ran in the target thread: %s\n", handler_tid == waiter_tid ? "yes" : "no");
    /* A process-directed signal goes to a thread that does not block it. */
    signal(SIGUSR2, on_sig);
    handler_tid = 0;
    kill(getpid(), SIGUSR2);
    while (!handler_tid)
        usleep(1000);
    SAY("kill(getpid()): handler ran in the thread not blocking it: %s\n",
        handler_tid == waiter_tid ? "yes" : "no");
    stop_waiter = 1;
    pthread_join(w, NULL);
    pthread_sigmask(SIG_UNBLOCK, &usr2, NULL);

    /* fork from a thread: the child is a process of one thread. */
    pthread_create(&j, NULL, forker, NULL);
    pthread_join(j, &r);
    SAY("fork from a thread: child exited %ld\n", (long)r);

    /* exit() in one thread ends the whole process (exit_group), with the others blocked. */
    pid_t c = fork();
    if (c == 0) {
        pthread_t a, b;
        pthread_create(&a, NULL, sleeper, NULL);
        pthread_create(&b, NULL, exit_group_thread, NULL);
        for (;;)
            pause();
    }
    int st;
    waitpid(c, &st, 0);
    SAY("exit() from a thread: process exited %d\n", WIFEXITED(st) ? WEXITSTATUS(st) : -1);
    /* The main thread returning with another still blocked: the same. */
    c = fork();
    if (c == 0) {
        pthread_t a;
        pthread_create(&a, NULL, sleeper, NULL);
        return 6;
    }
    waitpid(c, &st, 0);
    SAY("return from main with a thread running: exited %d\n", WIFEXITED(st) ? WEXITSTATUS(st) : -1);
    /* A fatal signal in one thread kills the group. */
    c = fork();
    if (c == 0) {
        pthread_t a;
        pthread_create(&a, NULL, sleeper, NULL);
        pthread_kill(a, SIGTERM);
        for (;;)
            pause();
    }
    waitpid(c, &st, 0);
    SAY("SIGTERM to one thread: process killed by %d\n", WIFSIGNALED(st) ? WTERMSIG(st) : -1);

    /* A robust mutex whose owner exits. */
    pthread_mutexattr_t ma;
    pthread_mutexattr_init(&ma);
    pthread_mutexattr_setrobust(&ma, PTHREAD_MUTEX_ROBUST);
    pthread_mutex_init(&robust, &ma);
    pthread_create(&j, NULL, die_holding, NULL);
    pthread_join(j, NULL);
    int e = pthread_mutex_lock(&robust);
    SAY("robust mutex after its owner died: %s\n", e == EOWNERDEAD ? "EOWNERDEAD" : e == 0 ? "0" : "other");
    int mc = pthread_mutex_consistent(&robust);
    SAY("made consistent: %d, unlock: %d\n", mc, pthread_mutex_unlock(&robust));

    /* Memory and descriptors made after the thread started are shared. */
    sem_t go;
    sem_init(&go, 0, 0);
    pthread_create(&j, NULL, use_shared, &go);
    int fds[2];
    pipe(fds);
    shared_fd = fds[1];
    shared_map = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    sem_post(&go);
    pthread_join(j, NULL);
    char b[3] = {0};
    read(fds[0], b, 2);
    SAY("shared after creation: pipe got \"%s\", mapping got %c\n", b, shared_map[0]);

    /* /proc: the process lists its threads under task/, /proc itself lists processes only. */
    {
        sem_t hold;
        sem_init(&hold, 0, 0);
        pthread_t a, b2;
        sem_init(&waiter_ready, 0, 0);
        stop_waiter = 0;
        pthread_create(&a, NULL, unblocked_waiter, NULL);
        sem_wait(&waiter_ready);
        pthread_create(&b2, NULL, sleeper_sem, &hold);
        int tasks = 0, worker_listed = 0, in_proc = 0;
        char name[32];
        snprintf(name, sizeof name, "%d", (int)waiter_tid);
        DIR *d = opendir("/proc/self/task");
        struct dirent *de;
        while (d && (de = readdir(d))) {
            if (de->d_name[0] != '.')
                tasks++;
            if (strcmp(de->d_name, name) == 0)
                worker_listed = 1;
        }
        if (d)
            closedir(d);
        d = opendir("/proc");
        while (d && (de = readdir(d)))
            if (strcmp(de->d_name, name) == 0)
                in_proc = 1;
        if (d)
            closedir(d);
        char path[64], line[256];
        int threads_line = 0, tid_stat = 0;
        FILE *f = fopen("/proc/self/status", "r");
        while (f && fgets(line, sizeof line, f))
            if (strcmp(line, "Threads:\t3\n") == 0)
                threads_line = 1;
        if (f)
            fclose(f);
        snprintf(path, sizeof path, "/proc/self/task/%d/stat", (int)waiter_tid);
        f = fopen(path, "r");
        if (f && fgets(line, sizeof line, f) && atoi(line) == waiter_tid)
            tid_stat = 1;
        if (f)
            fclose(f);
        SAY("/proc/self/task: %d entries, the worker's listed: %s, its stat: %s; Threads: 3 in status: %s; "
            "the worker listed in /proc: %s\n",
            tasks, worker_listed ? "yes" : "no", tid_stat ? "yes" : "no", threads_line ? "yes" : "no",
            in_proc ? "yes" : "no");
        stop_waiter = 1;
        sem_post(&hold);
        pthread_join(a, NULL);
        pthread_join(b2, NULL);
    }

    /* Timed waits. */
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_nsec += 20 * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&lock);
    e = pthread_cond_timedwait(&cond, &lock, &ts);
    pthread_mutex_unlock(&lock);
    SAY("cond_timedwait with nobody signalling: %s\n", e == ETIMEDOUT ? "ETIMEDOUT" : "other");

    /* Raw futex errors. */
    int word = 1;
    struct timespec ten = {0, 10 * 1000000L};
    long fr = syscall(SYS_futex, &word, FUTEX_WAIT_PRIVATE, 2, NULL, NULL, 0);
    SAY("futex wait on a changed word: %ld %s\n", fr, errno == EAGAIN ? "EAGAIN" : "other");
    fr = syscall(SYS_futex, &word, FUTEX_WAIT_PRIVATE, 1, &ten, NULL, 0);
    SAY("futex wait timing out: %ld %s\n", fr, errno == ETIMEDOUT ? "ETIMEDOUT" : "other");
    fr = syscall(SYS_futex, (char *)&word + 1, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
    SAY("futex misaligned: %ld %s\n", fr, errno == EINVAL ? "EINVAL" : "other");
    fr = syscall(SYS_futex, &word, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
    SAY("futex wake with nobody waiting: %ld\n", fr);
    fr = syscall(SYS_futex, &word, 99, 1, NULL, NULL, 0);
    SAY("futex unknown op: %ld %s\n", fr, errno == ENOSYS ? "ENOSYS" : "other");
    fr = syscall(SYS_clone, CLONE_THREAD, NULL, NULL, NULL, 0);
    SAY("clone CLONE_THREAD without CLONE_SIGHAND: %ld %s\n", fr, errno == EINVAL ? "EINVAL" : "other");
    fr = syscall(SYS_clone, CLONE_SIGHAND, NULL, NULL, NULL, 0);
    SAY("clone CLONE_SIGHAND without CLONE_VM: %ld %s\n", fr, errno == EINVAL ? "EINVAL" : "other");
    SAY("done\n");
    return 0;
}
