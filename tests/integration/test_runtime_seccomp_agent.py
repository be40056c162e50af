"""seccomp in real containers: SCMP_ACT_NOTIFY with a seccomp agent (runc's listenerPath protocol),
and the filter already in force when startContainer hooks run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from runtime_fixtures import Bundles, run_capture

from tugboat.errors import TugError
from tugboat.runtime.api import Runtime

pytest_plugins = ("runtime_fixtures",)

# A minimal seccomp agent: accepts connections on argv[1], receives (state JSON, listener fd)
# over SCM_RIGHTS, appends each state to argv[2] (one JSON per line), then answers
# notifications: mkdir/mkdirat fail with ENOMEDIUM, anything else continues. It exits when
# every listener it got has hung up (the filtered processes are gone) or after 60 s.
AGENT = r"""
import errno, fcntl, json, os, select, socket, struct, sys, time
RECV, SEND = 0xC0502100, 0xC0182101   # SECCOMP_IOCTL_NOTIF_RECV / _SEND
MKDIR, MKDIRAT = 83, 258
srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
srv.bind(sys.argv[1]); srv.listen(8)
poll = select.poll(); poll.register(srv.fileno(), select.POLLIN)
listeners, seen, deadline = set(), 0, time.time() + 60
while time.time() < deadline and (seen == 0 or listeners):
    for fd, ev in poll.poll(200):
        if fd == srv.fileno():
            conn, _ = srv.accept()
            msg, fds, _, _ = socket.recv_fds(conn, 65536, 4)
            conn.close()
            with open(sys.argv[2], "a") as f:
                f.write(json.dumps({"state": json.loads(msg), "nfds": len(fds)}) + "\n")
            for lfd in fds:
                listeners.add(lfd); poll.register(lfd, select.POLLIN); seen += 1
        elif ev & select.POLLIN:
            buf = bytearray(80)
            try:
                fcntl.ioctl(fd, RECV, buf, True)
            except OSError:
                continue
            nid, _pid, _flags, nr = struct.unpack_from("=QIIi", buf)
            if nr in (MKDIR, MKDIRAT):
                resp = struct.pack("=QqiI", nid, 0, -errno.ENOMEDIUM, 0)
            else:
                resp = struct.pack("=QqiI", nid, 0, 0, 1)  # SECCOMP_USER_NOTIF_FLAG_CONTINUE
            try:
                fcntl.ioctl(fd, SEND, bytearray(resp), True)
            except OSError:
                pass
        elif ev & (select.POLLHUP | select.POLLERR):
            poll.unregister(fd); listeners.discard(fd); os.close(fd)
"""


class Agent:
    def __init__(self, base: str) -> None:
        self.sock = os.path.join(base, f"agent-{uuid.uuid4().hex[:6]}.sock")
        self.out = self.sock + ".json"
        self.proc = subprocess.Popen([sys.executable, "-c", AGENT, self.sock, self.out])
        for _ in range(500):
            if os.path.exists(self.sock):
                break
            time.sleep(0.01)
        else:
            self.stop()
            raise AssertionError("the seccomp agent did not start")

    def received(self) -> list[dict[str, Any]]:
        try:
            with open(self.out) as f:
                return [json.loads(line) for line in f]
        except FileNotFoundError:
            return []

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()  # our own child, by its Popen handle
        self.proc.wait()


@pytest.fixture
def agent(tmp_path: Any) -> Iterator[Agent]:
    a = Agent(str(tmp_path))
    yield a
    a.stop()


def _notify(sock: str, nnp: bool = True, names: tuple[str, ...] = ("mkdir", "mkdirat")) -> Any:
    def edit(c: dict) -> None:
        c["process"]["noNewPrivileges"] = nnp
        c["linux"]["seccomp"] = {
            "defaultAction": "SCMP_ACT_ALLOW", "listenerPath": sock, "listenerMetadata": "tug-meta",
            "architectures": ["SCMP_ARCH_X86_64"],
            "syscalls": [{"names": list(names), "action": "SCMP_ACT_NOTIFY"}],
        }
    return edit


@pytest.mark.parametrize("nnp", [True, False])
def test_notify_hands_the_listener_to_the_agent(runtime: Runtime, bundles: Bundles, agent: Agent, nnp: bool) -> None:
    bundle = bundles.make(["sh", "-c", "mkdir /tmp/foo; echo rc=$?; test -d /tmp/foo || echo absent"],
                          edit=_notify(agent.sock, nnp))
    code, out = run_capture(runtime, bundle, cid="notify1")
    assert code == 0, out
    assert "No medium found" in out and "rc=1" in out and "absent" in out, out
    (got,) = agent.received()
    st = got["state"]
    assert got["nfds"] == 1 and st["fds"] == ["seccompFd"] and st["metadata"] == "tug-meta"
    assert st["state"]["id"] == "notify1" and st["state"]["bundle"] == bundle
    assert st["pid"] > 0 and st["state"]["pid"] == st["pid"] and st["ociVersion"]


def test_notify_on_exec_and_busy_syscalls(runtime: Runtime, bundles: Bundles, agent: Agent) -> None:
    """read/close/openat notified too: the init's own syscalls after the filter go through the
    agent; exec hands its own listener over."""
    names = ("mkdir", "mkdirat", "read", "close", "openat")
    runtime.run("notify2", bundles.make(["sleep", "100"], edit=_notify(agent.sock, True, names)), detach=True)
    r, w = os.pipe()
    try:
        code = runtime.exec("notify2", {"args": ["mkdir", "/tmp/bar"], "cwd": "/", "env": ["PATH=/bin"],
                                        "noNewPrivileges": True}, stdout=w, stderr=w)
    finally:
        os.close(w)
    out = os.read(r, 65536).decode()
    os.close(r)
    assert code == 1 and "No medium found" in out, (code, out)
    states = [g["state"] for g in agent.received()]
    assert len(states) == 2
    init_pid = runtime.state("notify2")["pid"]
    assert states[0]["pid"] == init_pid
    assert states[1]["pid"] != init_pid and states[1]["state"]["pid"] == init_pid
    assert states[1]["state"]["status"] == "running"
    runtime.delete("notify2", force=True)


def test_notify_without_an_agent_fails_cleanly(runtime: Runtime, bundles: Bundles, tmp_path: Any) -> None:
    bundle = bundles.make(["true"], edit=_notify(str(tmp_path / "nobody-listens.sock")))
    with pytest.raises(TugError, match="failed to connect with seccomp agent"):
        runtime.create("notify3", bundle)
    assert runtime.list() == []


def test_notify_refuses_write(runtime: Runtime, bundles: Bundles, agent: Agent) -> None:
    bundle = bundles.make(["true"], edit=_notify(agent.sock, names=("write",)))
    with pytest.raises(TugError, match="SCMP_ACT_NOTIFY cannot be used for the write syscall"):
        runtime.create("notify4", bundle)
    assert runtime.list() == [] and agent.received() == []


def test_start_container_hook_runs_under_the_filter(runtime: Runtime, bundles: Bundles) -> None:
    def edit(c: dict) -> None:
        c["linux"]["seccomp"] = {"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_X86_64"],
                                 "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_KILL"}]}
        c["hooks"] = {"startContainer": [{"path": "/bin/sh", "args": ["sh", "-c", "mkdir /tmp/hookdir"]}]}

    code, out = run_capture(runtime, bundles.make(["true"], edit=edit))
    assert code != 0
    assert "error running hook #0 (startContainer /bin/sh): signal: bad system call" in out, out
