/* sigwait: rt_sigsuspend, rt_sigtimedwait, sigwait and rt_sigpending, printed so that the output can
 * be compared between the host and the guest kernel (tests/tests/guest_threads.rs, glibc and musl).
 * Cases: sigsuspend woken by a signal a child sends (EINTR after the handler, the old mask back), with
 * the signal already pending, and not woken by an ignored one; blocked-but-ignored signals stay
 * pending (SIGCHLD at its default); sigtimedwait taking a blocked pending signal, timing out (EAGAIN),
 * interrupted by a handled signal (EINTR), EINVAL for a bad timeout or set size; sigwait. */
#define PROG "sigwait"
#include "common.h"

static volatile sig_atomic_t got;

static void on_sig(int sig) { got = sig; }

/* A child that sends `sig` to its parent after `ms` milliseconds. */
static pid_t send_later(int sig, int ms) {
    pid_t pid = fork();
    if (pid == 0) {
        struct timespec t = {0, ms * 1000000L};
        nanosleep(&t, NULL);
        kill(getppid(), sig);
        _exit(0);
    }
    return pid;
}

static int blocked(int sig) {
    sigset_t cur;
    sigprocmask(SIG_BLOCK, NULL, &cur);
    return sigismember(&cur, sig);
}

static int pending(int sig) {
    sigset_t p;
    sigpending(&p);
    return sigismember(&p, sig);
}

int main(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sig;
    sigaction(SIGUSR1, &sa, NULL);
    sigaction(SIGUSR2, &sa, NULL);
    sigset_t usr1, empty, s;
    sigemptyset(&empty);
    sigemptyset(&usr1);
    sigaddset(&usr1, SIGUSR1);

    /* sigsuspend woken by a signal from a child. */
    sigprocmask(SIG_BLOCK, &usr1, NULL);
    pid_t c = send_later(SIGUSR1, 50);
    got = 0;
    long r = sigsuspend(&empty);
    SAY("sigsuspend: %s, handler ran for %d, SIGUSR1 blocked again: %s\n", err(r), got, blocked(SIGUSR1) ? "yes" : "no");
    waitpid(c, NULL, 0);

    /* Already pending: returns at once. */
    raise(SIGUSR1);
    SAY("pending before: %s\n", pending(SIGUSR1) ? "yes" : "no");
    got = 0;
    r = sigsuspend(&empty);
    SAY("sigsuspend with it pending: %s, handler ran for %d, pending after: %s\n", err(r), got,
        pending(SIGUSR1) ? "yes" : "no");

    /* An ignored signal does not end it: SIGURG (default ignore) first, then SIGUSR1. */
    pid_t c1 = send_later(SIGURG, 20);
    pid_t c2 = send_later(SIGUSR1, 120);
    got = 0;
    r = sigsuspend(&empty);
    SAY("sigsuspend past an ignored signal: %s, handler ran for %d\n", err(r), got);
    waitpid(c1, NULL, 0);
    waitpid(c2, NULL, 0);

    /* SIGCHLD blocked at its default (ignore) action stays pending; sigtimedwait takes it. */
    sigset_t chld;
    sigemptyset(&chld);
    sigaddset(&chld, SIGCHLD);
    sigprocmask(SIG_BLOCK, &chld, NULL);
    pid_t k = fork();
    if (k == 0)
        _exit(3);
    int st;
    waitpid(k, &st, 0);
    SAY("blocked SIGCHLD pending after the child exited: %s\n", pending(SIGCHLD) ? "yes" : "no");
    siginfo_t si;
    struct timespec zero = {0, 0};
    r = sigtimedwait(&chld, &si, &zero);
    SAY("sigtimedwait: %s, si_signo %d, pending after: %s\n", err(r), si.si_signo, pending(SIGCHLD) ? "yes" : "no");

    /* Timeout. */
    struct timespec ten = {0, 10 * 1000000L};
    sigset_t usr2;
    sigemptyset(&usr2);
    sigaddset(&usr2, SIGUSR2);
    sigprocmask(SIG_BLOCK, &usr2, NULL);
    r = sigtimedwait(&usr2, NULL, &ten);
    SAY("sigtimedwait with nothing: %s\n", err(r));

    /* A signal sent while waiting. */
    c = send_later(SIGUSR2, 30);
    struct timespec five = {5, 0};
    got = 0;
    r = sigtimedwait(&usr2, &si, &five);
    SAY("sigtimedwait woken: %s, handler ran: %s\n", err(r), got ? "yes" : "no");
    waitpid(c, NULL, 0);

    /* Interrupted by a handled signal outside the set. */
    sigprocmask(SIG_UNBLOCK, &usr1, NULL);
    c = send_later(SIGUSR1, 30);
    got = 0;
    /* glibc returns the EINTR; musl retries the call until the timeout (EAGAIN). */
    struct timespec short_wait = {0, 300 * 1000000L};
    r = sigtimedwait(&usr2, &si, &short_wait);
    SAY("sigtimedwait interrupted: %s, handler ran for %d\n", err(r), got);
    waitpid(c, NULL, 0);

    struct timespec bad = {0, 2000000000L};
    SAY("bad timeout: %s\n", err(sigtimedwait(&usr2, NULL, &bad)));
    SAY("bad set size: %s\n", err(syscall(SYS_rt_sigtimedwait, &usr2, NULL, &ten, 4)));
    SAY("sigsuspend bad set size: %s\n", err(syscall(SYS_rt_sigsuspend, &empty, 4)));

    /* sigwait (the libc call over rt_sigtimedwait). */
    c = send_later(SIGUSR2, 30);
    int sig = 0;
    r = sigwait(&usr2, &sig);
    SAY("sigwait: %ld, signal %d\n", r, sig);
    waitpid(c, NULL, 0);
    sigemptyset(&s);
    SAY("done\n");
    return 0;
}
