#define _GNU_SOURCE
#include "CChildProcess.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>
#if defined(__linux__)
#include <sys/prctl.h>
#endif

// fork + exec rather than posix_spawn, because posix_spawn cannot set the parent-death signal.
// Between fork and exec the child calls only async-signal-safe functions. An exec failure is
// reported through a close-on-exec pipe, so the caller gets an errno instead of a child that exits.
int cw_spawn(const char *path, char *const argv[], char *const envp[], const char *output_path,
             int errors_to_output, int parent_death_signal, pid_t *pid_out) {
    int report[2];
    if (pipe2(report, O_CLOEXEC) != 0) return errno;
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0) {
        int error = errno;
        close(report[0]);
        close(report[1]);
        return error;
    }
    if (pid == 0) {
        int error = 0;
#if defined(__linux__)
        if (parent_death_signal != 0) {
            if (prctl(PR_SET_PDEATHSIG, parent_death_signal) != 0) error = errno;
            // The parent died before the signal was armed: nothing would ever stop this child.
            else if (getppid() != parent) _exit(127);
        }
#else
        (void)parent_death_signal;
        (void)parent;
#endif
        // A test process may block or ignore signals on its threads; the child starts clean.
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        if (error == 0) {
            int input = open("/dev/null", O_RDONLY);
            int output = open(output_path, O_WRONLY | O_CREAT | O_APPEND, 0600);
            if (input < 0 || output < 0) error = errno;
            else if (dup2(input, 0) < 0 || dup2(output, 1) < 0 || (errors_to_output && dup2(output, 2) < 0)) error = errno;
        }
#if defined(__linux__) && defined(CLOSE_RANGE_CLOEXEC)
        // Nothing of the parent's but standard input, output and error reaches the program: an
        // inherited descriptor (a test's listening socket, a connection) would stay open as long
        // as the child lives, and a port another test closed would still be bound by the child.
        // Marked close-on-exec rather than closed, so the report pipe still works; a kernel
        // without the flag (before 5.11) leaves them as they were.
        if (error == 0) (void)close_range(3, ~0U, CLOSE_RANGE_CLOEXEC);
#endif
        if (error == 0) {
            execve(path, argv, envp);
            error = errno;
        }
        (void)!write(report[1], &error, sizeof error);
        _exit(127);
    }
    close(report[1]);
    int child_error = 0;
    ssize_t got;
    do { got = read(report[0], &child_error, sizeof child_error); } while (got < 0 && errno == EINTR);
    close(report[0]);
    if (got == (ssize_t)sizeof child_error) {
        int status;
        while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {}
        return child_error;
    }
    *pid_out = pid;
    return 0;
}
