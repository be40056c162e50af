"""tug-monitor: the tiny C process left behind per container to record its exit status.

The C source is kept here (compiled with gcc on first use into a cache directory, keyed by the
source's hash). Where no compiler is available the runtime falls back to ``python_monitor``,
the same loop in Python (correct, but ~8 MiB resident instead of a few hundred KiB).
"""

from __future__ import annotations

import os
import time

MONITOR_C = r"""
/* tug-monitor: the tiny process that stays behind each container (part of tugboat's runtime).
 *
 * argv: tug-monitor STATE_DIR INIT_PID
 * It is exec'd by the runtime in the process that is the parent (a child subreaper) of the
 * container's init. It reaps children until INIT_PID exits, writes
 * STATE_DIR/exit ("<exitStatus> <signal> <unix-ns>\n") atomically, reaps what is left, exits.
 * No allocation, no stdio: a few KiB of RSS.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static int put_num(char *buf, long long v) {
    char tmp[32];
    int n = 0, i = 0;
    if (v < 0) { buf[i++] = '-'; v = -v; }
    do { tmp[n++] = (char)('0' + v % 10); v /= 10; } while (v);
    while (n) buf[i++] = tmp[--n];
    return i;
}

int main(int argc, char **argv) {
    if (argc < 3) return 2;
    int dirfd = open(argv[1], O_DIRECTORY | O_RDONLY | O_CLOEXEC);
    if (dirfd < 0) return 3;
    pid_t init = (pid_t)atol(argv[2]);
    signal(SIGINT, SIG_IGN);
    signal(SIGHUP, SIG_IGN);
    signal(SIGTERM, SIG_IGN);
    signal(SIGPIPE, SIG_IGN);
    prctl(PR_SET_NAME, "tug-monitor", 0, 0, 0);
    int status = 0, found = 0;
    for (;;) {
        pid_t p = waitpid(-1, &status, 0);
        if (p < 0) {
            if (errno == EINTR) continue;
            break; /* ECHILD */
        }
        if (p == init) { found = 1; break; }
    }
    if (found) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        int code = 0, sig = 0;
        if (WIFEXITED(status)) code = WEXITSTATUS(status);
        else if (WIFSIGNALED(status)) { sig = WTERMSIG(status); code = 128 + sig; }
        char buf[96];
        int n = put_num(buf, code);
        buf[n++] = ' ';
        n += put_num(buf + n, sig);
        buf[n++] = ' ';
        n += put_num(buf + n, (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec);
        buf[n++] = '\n';
        int fd = openat(dirfd, "exit.tmp", O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (fd >= 0) {
            if (write(fd, buf, (size_t)n) == n) {
                close(fd);
                renameat(dirfd, "exit.tmp", dirfd, "exit");
            } else {
                close(fd);
            }
        }
    }
    /* reap whatever else was reparented to us */
    while (waitpid(-1, &status, WNOHANG) > 0) {}
    return 0;
}
"""


def cache_dir() -> str:
    explicit = os.environ.get("TUG_RUNTIME_CACHE")
    if explicit:
        return explicit
    if os.geteuid() == 0:
        return "/var/cache/tugboat"
    return os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "tugboat")


def monitor_path() -> str:
    from _sha256 import sha256

    digest = sha256(MONITOR_C.encode()).hexdigest()[:16]
    return os.path.join(cache_dir(), f"tug-monitor-{digest}")


_FOUND: list[str | None] = []


def ensure_monitor() -> str | None:
    """The compiled monitor's path, compiling it if needed; None if it cannot be built."""
    if _FOUND:
        return _FOUND[0]
    path = monitor_path()
    if os.access(path, os.X_OK):
        _FOUND.append(path)
        return path
    import subprocess

    result: str | None = None
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        src = f"{path}.{os.getpid()}.c"
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(src, "w") as f:
            f.write(MONITOR_C)
        for flags in (["-static"], []):
            proc = subprocess.run(
                [os.environ.get("CC", "gcc"), "-O2", *flags, "-o", tmp, src],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                check=False,
            )
            if proc.returncode == 0:
                os.rename(tmp, path)
                result = path
                break
        os.unlink(src)
    except OSError:
        result = None
    _FOUND.append(result)
    return result


def python_monitor(state_dir: str, init_pid: int) -> None:
    """Fallback monitor (same behaviour as the C one); never returns."""
    import signal

    for s in (signal.SIGINT, signal.SIGHUP, signal.SIGTERM, signal.SIGPIPE):
        signal.signal(s, signal.SIG_IGN)
    status = None
    while True:
        try:
            pid, st = os.waitpid(-1, 0)
        except ChildProcessError:
            break
        except InterruptedError:
            continue
        if pid == init_pid:
            status = st
            break
    if status is not None:
        if os.WIFSIGNALED(status):
            sig = os.WTERMSIG(status)
            code = 128 + sig
        else:
            sig, code = 0, os.waitstatus_to_exitcode(status)
        tmp = os.path.join(state_dir, "exit.tmp")
        try:
            with open(tmp, "w") as f:
                f.write(f"{code} {sig} {time.time_ns()}\n")
            os.rename(tmp, os.path.join(state_dir, "exit"))
        except OSError:
            pass
    os._exit(0)
