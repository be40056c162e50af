/* A static test helper run inside containers by tugboat's runtime tests. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

static int report(const char *what, long r) {
    if (r < 0) { printf("%s: errno=%d %s\n", what, errno, strerror(errno)); return 1; }
    printf("%s: ok\n", what);
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    const char *cmd = argv[1];
    if (!strcmp(cmd, "keyctl")) return report("keyctl", syscall(SYS_keyctl, 0 /* GET_KEYRING_ID */, -3, 0, 0, 0)), 0;
    if (!strcmp(cmd, "kexec_load")) return report("kexec_load", syscall(SYS_kexec_load, 0, 0, 0, 0)), 0;
    if (!strcmp(cmd, "open_by_handle_at")) return report("open_by_handle_at", syscall(SYS_open_by_handle_at, -1, 0, 0)), 0;
    if (!strcmp(cmd, "unshare")) return report("unshare", syscall(SYS_unshare, 0x00020000)), 0;
    if (!strcmp(cmd, "mount")) return report("mount", mount("none", "/tmp", "tmpfs", 0, 0)), 0;
    if (!strcmp(cmd, "euid")) { printf("uid=%d euid=%d\n", getuid(), geteuid()); return 0; }
    if (!strcmp(cmd, "write") && argc > 2) {
        int fd = open(argv[2], O_WRONLY);
        if (fd < 0) return report(argv[2], -1), 0;
        return report(argv[2], write(fd, "1", 1)), 0;
    }
    if (!strcmp(cmd, "alloc") && argc > 2) {
        long mb = atol(argv[2]);
        for (long i = 0; i < mb; i++) {
            char *p = malloc(1 << 20);
            if (!p) { printf("malloc failed at %ld MiB\n", i); return 3; }
            memset(p, 1, 1 << 20);
        }
        printf("allocated %ld MiB\n", mb);
        return 0;
    }
    if (!strcmp(cmd, "forkbomb") && argc > 2) {
        long n = atol(argv[2]), ok = 0;
        for (long i = 0; i < n; i++) {
            pid_t p = fork();
            if (p == 0) { pause(); _exit(0); }
            if (p < 0) { printf("fork failed after %ld: errno=%d %s\n", ok, errno, strerror(errno)); fflush(stdout); return 0; }
            ok++;
        }
        printf("forked %ld\n", ok);
        return 0;
    }
    return 2;
}
