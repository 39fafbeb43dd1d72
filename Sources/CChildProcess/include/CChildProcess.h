#ifndef C_CHILD_PROCESS_H
#define C_CHILD_PROCESS_H

#include <sys/types.h>

/// Starts `path` with `argv` and `envp` (NULL-terminated), standard input from /dev/null and
/// standard output appended to `output_path` (standard error too when `errors_to_output`). With a
/// non-zero `parent_death_signal`, the child gets that signal when the thread that called this
/// function ends (Linux PR_SET_PDEATHSIG; ignored elsewhere), and it never runs at all when that
/// thread is already gone by the time it starts. Returns 0 and the child's pid, or an errno value
/// (the child's failure to exec included).
int cw_spawn(const char *path, char *const argv[], char *const envp[], const char *output_path,
             int errors_to_output, int parent_death_signal, pid_t *pid_out);

#endif
