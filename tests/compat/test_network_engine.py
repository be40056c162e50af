"""The real docker CLI against a real `tug daemon`: networks, `run --network`, `-p`, restart.

Skipped (with the reason) when the engine cannot run a container on this checkout yet. The daemon
runs on a temporary root with its own network instance (bridge, nft tables).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from conftest import require_binary
from proc_support import stop_process

pytestmark = [pytest.mark.root, pytest.mark.slow]

if os.geteuid() != 0:
    pytest.skip("needs root", allow_module_level=True)


class TugDaemon:
    def __init__(self, root: str, sock: str) -> None:
        self.root = root
        self.sock = sock
        self.env = {**os.environ, "TUG_NETWORK_INSTANCE": "e" + os.urandom(2).hex(),
                    "DOCKER_HOST": f"unix://{sock}", "DOCKER_CONFIG": os.path.dirname(sock)}
        self.proc: subprocess.Popen | None = None
        self.log = open(os.path.join(os.path.dirname(sock), "daemon.log"), "ab")  # noqa: SIM115

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tugboat.cli.main", "daemon", "--root", self.root, "--host",
             f"unix://{self.sock}"], env=self.env, stdout=self.log, stderr=self.log)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if os.path.exists(self.sock) and self.docker("version", check=False, timeout=5).returncode == 0:
                return
            if self.proc.poll() is not None:
                raise AssertionError("tug daemon exited at start")
            time.sleep(0.1)
        raise AssertionError("tug daemon did not come up")

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, 20)
        self.proc = None

    def docker(self, *args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
        r = subprocess.run([require_binary("docker"), *args], capture_output=True, text=True, env=self.env,
                           timeout=timeout)
        if check:
            assert r.returncode == 0, f"docker {' '.join(args)}: {r.stderr}"
        return r


@pytest.fixture
def tugd(tmp_path: Any) -> Iterator[TugDaemon]:
    root = str(tmp_path / "root")
    boot = subprocess.run([sys.executable, "-m", "tugboat.cli.main", "--root", root, "image", "bootstrap",
                           "busybox"], capture_output=True, text=True, timeout=120)
    if boot.returncode != 0:
        pytest.skip(f"cannot bootstrap a busybox image here: {boot.stderr.strip()[-200:]}")
    d = TugDaemon(root, str(tmp_path / "tug.sock"))
    try:
        d.start()
        try:
            probe = d.docker("run", "--rm", "--network", "none", "busybox", "true", check=False, timeout=15)
        except subprocess.TimeoutExpired:
            pytest.skip("the engine cannot run a container yet (docker run timed out)")
        if probe.returncode != 0:
            pytest.skip(f"the engine cannot run a container yet: {probe.stderr.strip()[-200:]}")
        yield d
    finally:
        removed = False
        with contextlib.suppress(Exception):
            ids = d.docker("ps", "-aq", check=False, timeout=20).stdout.split()
            if ids:
                d.docker("rm", "-f", *ids, timeout=60)
            removed = True
        d.stop()
        d.log.close()
        tables = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True).stdout
        inst = d.env["TUG_NETWORK_INSTANCE"]
        left = f"tugboat-{inst}" in tables
        scrub(root, inst)
    assert removed and not left, "nft tables left behind after the daemon stopped idle"


def scrub(root: str, instance: str) -> None:
    """Remove whatever a stuck engine left under ``root``: its processes (all started by this
    test's daemon), mounts, cgroups, and the network instance's kernel objects."""
    import signal as _signal

    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read()
        except OSError:
            continue
        if root.encode() in cmd:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), _signal.SIGKILL)
    time.sleep(0.2)
    with open("/proc/self/mountinfo") as f:
        mounts = [line.split()[4] for line in f if line.split()[4].startswith(root + "/")]
    for m in reversed(mounts):
        subprocess.run(["umount", "-l", m], capture_output=True)
    cdir = os.path.join(root, "containers")
    ids = os.listdir(cdir) if os.path.isdir(cdir) else []
    for ctl in os.listdir("/sys/fs/cgroup"):
        for cid in ids:
            p = os.path.join("/sys/fs/cgroup", ctl, "tugboat", cid)
            if os.path.isdir(p):
                with contextlib.suppress(OSError):
                    os.rmdir(p)
    from tugboat.network.manager import NetworkManager

    mgr = NetworkManager(root, instance=instance)
    mgr.restore()
    mgr.shutdown(remove_all=True)


@contextlib.contextmanager
def outside_server(prefix: str, body: str) -> Iterator[str]:
    """A netns wired to the host by a veth pair (prefix.1 host side, prefix.2 inside) running
    busybox httpd on :8000; yields the server's address. Everything is removed afterwards."""
    import tempfile

    from tugboat.network import kernel

    work = tempfile.mkdtemp(prefix="tug-outside-")
    path = os.path.join(work, "ns")
    host_if = "tbo" + os.urandom(3).hex()
    kernel.create_netns(path, kernel.lo_up)
    ipr = kernel.iproute()
    proc = None
    try:
        fd = os.open(path, os.O_RDONLY)
        try:
            ipr.link("add", ifname=host_if, kind="veth", state="up", peer={"ifname": "eth0", "net_ns_fd": fd})
        finally:
            os.close(fd)
        ipr.addr("add", index=kernel.link_index(ipr, host_if), address=f"{prefix}.1", prefixlen=24)
        kernel.in_netns(path, lambda: kernel.configure_iface("eth0", f"{prefix}.2", 24, None))
        with open(os.path.join(work, "index.html"), "w") as f:
            f.write(body)
        proc = subprocess.Popen(["nsenter", f"--net={path}", "busybox", "httpd", "-f", "-p", "8000", "-h", work])
        time.sleep(0.3)
        yield f"{prefix}.2"
    finally:
        if proc is not None:
            proc.kill()
            proc.wait()
        kernel.delete_link(ipr, host_if)
        ipr.close()
        kernel.remove_netns(path)
        import shutil

        shutil.rmtree(work, ignore_errors=True)


def _ip(d: TugDaemon, name: str, net: str) -> str:
    out = d.docker("inspect", name).stdout
    return json.loads(out)[0]["NetworkSettings"]["Networks"][net]["IPAddress"]


def test_docker_cli_networks_names_ports_and_restart(tugd: TugDaemon) -> None:
    d = tugd
    d.docker("network", "create", "appnet")
    d.docker("run", "-d", "--name", "web", "--network", "appnet", "--network-alias", "www",
             "-p", "127.0.0.1::80", "busybox", "httpd", "-f", "-p", "80", "-h", "/etc")
    ip = _ip(d, "web", "appnet")
    # by name through the embedded DNS, from another container on the network
    r = d.docker("run", "--rm", "--network", "appnet", "busybox", "nslookup", "www", check=False)
    assert ip in r.stdout, r.stdout + r.stderr
    # (not PID 1: a PID 1 ignores timeout's SIGTERM; and no `wget -T`: Debian's busybox crashes)
    r = d.docker("run", "--rm", "--network", "appnet", "busybox", "sh", "-c",
                 f"timeout 5 wget -q -O - http://{ip}/hostname; exit $?", check=False)
    assert r.returncode == 0 and r.stdout.strip(), r.stderr
    r = d.docker("run", "--rm", "--network", "appnet", "busybox", "sh", "-c",
                 "timeout 5 wget -q -O - http://www/hostname; exit $?", check=False)
    assert r.returncode == 0 and r.stdout.strip(), r.stderr
    # -P publishes the EXPOSEd ports on random host ports, shown by `docker port`
    d.docker("run", "-d", "--name", "pall", "--expose", "8080", "-P", "busybox", "httpd", "-f", "-p", "8080",
             "-h", "/etc")
    p2 = d.docker("port", "pall", "8080").stdout.split()[0].rsplit(":", 1)[1]
    with urllib.request.urlopen(f"http://127.0.0.1:{p2}/hostname", timeout=5) as resp:
        assert resp.read().strip()
    # another network cannot reach it
    d.docker("network", "create", "othernet")
    r = d.docker("run", "--rm", "--network", "othernet", "busybox", "sh", "-c",
                 f"timeout 2 wget -q -O - http://{ip}/hostname; exit $?", check=False)
    assert r.returncode != 0
    # connect the running container to the other network too: now reachable by name from there
    d.docker("network", "connect", "--alias", "web2", "othernet", "web")
    nets = json.loads(d.docker("inspect", "web").stdout)[0]["NetworkSettings"]["Networks"]
    assert set(nets) == {"appnet", "othernet"} and "web2" in nets["othernet"]["DNSNames"]
    r = d.docker("run", "--rm", "--network", "othernet", "busybox", "sh", "-c",
                 "timeout 5 wget -q -O - http://web2/hostname; exit $?", check=False)
    assert r.returncode == 0 and r.stdout.strip(), r.stderr
    d.docker("network", "disconnect", "othernet", "web")
    r = d.docker("run", "--rm", "--network", "othernet", "busybox", "nslookup", "web2", check=False)
    assert r.returncode != 0
    # a created (not started) container connected to a second network gets both at start
    d.docker("create", "--name", "late", "--network", "appnet", "busybox", "httpd", "-f", "-p", "80", "-h",
             "/etc")
    d.docker("network", "connect", "othernet", "late")
    d.docker("start", "late")
    nets = json.loads(d.docker("inspect", "late").stdout)[0]["NetworkSettings"]["Networks"]
    assert set(nets) == {"appnet", "othernet"}
    r = d.docker("run", "--rm", "--network", "othernet", "busybox", "sh", "-c",
                 "timeout 5 wget -q -O - http://late/hostname; exit $?", check=False)
    assert r.returncode == 0 and r.stdout.strip(), r.stderr
    # the published port, from the host's loopback
    port = d.docker("port", "web", "80").stdout.strip().rsplit(":", 1)[1]
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/hostname", timeout=5) as resp:
        first = resp.read()
    assert first.strip()
    # egress: a netns of this test acting as an outside server, with no route back to the
    # container subnet: only the masquerade lets the reply come back
    with outside_server("198.18.81", "from outside") as server_ip:
        r = d.docker("run", "--rm", "busybox", "sh", "-c",
                     f"timeout 5 wget -q -O - http://{server_ip}:8000/index.html; exit $?", check=False)
        assert r.returncode == 0 and r.stdout == "from outside", r.stderr
    # rm a network in use fails; the daemon restarts and the port still works
    r = d.docker("network", "rm", "appnet", check=False)
    assert r.returncode != 0 and "active endpoints" in r.stderr
    d.stop()
    d.start()
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/hostname", timeout=5) as resp:
        assert resp.read() == first
