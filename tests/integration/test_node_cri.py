"""The node agent's runtime interface (``cluster/node/cri.py``) over a real engine: a pod's
containers share the sandbox's IPC namespace and /dev/shm, and a container writing past its memory
limit is reported OOMKilled from the kernel's own counter (not from its exit code)."""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from collections.abc import Iterator

import pytest

from tugboat.cluster.node import volumes
from tugboat.cluster.node.cri import ContainerConfig, ContainerStatus, EngineRuntime, SandboxConfig


@pytest.fixture(scope="module")
def rt(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EngineRuntime]:
    from tugboat.engine.engine import Engine
    from tugboat.images.bootstrap import bootstrap_busybox

    root = str(tmp_path_factory.mktemp("node-cri"))
    engine = Engine(os.path.join(root, "engine"))
    bootstrap_busybox(engine.images, "busybox:latest")
    runtime = EngineRuntime(engine)
    runtime.ensure_pause_image()
    runtime.agent_root = os.path.join(root, "agent")  # type: ignore[attr-defined]
    try:
        yield runtime
    finally:
        for c in runtime.list_pod_containers():
            runtime.remove_container(c["id"])
        engine.shutdown()
        with open("/proc/self/mounts") as f:
            mounts = [line.split()[1] for line in f]
        for m in reversed(mounts):
            if m.startswith(root):
                subprocess.run(["umount", "-l", m], capture_output=True)


class Pod:
    def __init__(self, rt: EngineRuntime, name: str) -> None:
        self.rt = rt
        self.uid = str(uuid.uuid4())
        shm = volumes.pod_shm(rt.agent_root, self.uid)  # type: ignore[attr-defined]
        self.cfg = SandboxConfig(uid=self.uid, namespace="default", name=name, hostname=name, network="none",
                                 shm=shm)
        self.sandbox, _ = rt.run_sandbox(self.cfg)
        self.cids: list[str] = []

    def run(self, name: str, script: str, memory: int | None = None) -> str:
        cid = self.rt.create_container(self.sandbox, self.cfg, ContainerConfig(
            name=name, image="busybox:latest", command=["sh", "-c", script], memory_limit=memory))
        self.cids.append(cid)
        self.rt.start_container(cid)
        return cid

    def remove(self) -> None:
        for cid in self.cids:
            self.rt.remove_container(cid)
        self.rt.stop_sandbox(self.sandbox)
        volumes.cleanup_pod_dir(self.rt.agent_root, self.uid)  # type: ignore[attr-defined]


def _exec(rt: EngineRuntime, cid: str, script: str) -> str:
    code, out = rt.exec_sync(cid, ["sh", "-c", script], 20)
    assert code == 0, out
    return out.decode().strip()


def _exited(rt: EngineRuntime, cid: str, timeout: float = 30) -> ContainerStatus:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        st = rt.status(cid)
        if st.state == "exited":
            return st
        time.sleep(0.1)
    raise AssertionError(f"container {cid[:12]} still {rt.status(cid).state} after {timeout} s")


def test_pod_containers_share_ipc_namespace_and_dev_shm(rt: EngineRuntime) -> None:
    pod, other = Pod(rt, "ipc-a"), Pod(rt, "ipc-b")
    try:
        writer = pod.run("writer", "echo from-writer > /dev/shm/seg && touch /dev/mqueue/q1 && exec sleep 60")
        reader = pod.run("reader", "exec sleep 60")
        stranger = other.run("stranger", "exec sleep 60")
        deadline = time.monotonic() + 10
        while not os.path.exists(os.path.join(pod.cfg.shm or "", "seg")) and time.monotonic() < deadline:
            time.sleep(0.05)
        # one IPC namespace for the whole pod (the sandbox's), another pod has its own
        ns_writer = _exec(rt, writer, "readlink /proc/self/ns/ipc")
        assert _exec(rt, reader, "readlink /proc/self/ns/ipc") == ns_writer
        sandbox_pid = rt.sandbox_pid(pod.sandbox)
        assert os.readlink(f"/proc/{sandbox_pid}/ns/ipc") == ns_writer
        assert _exec(rt, stranger, "readlink /proc/self/ns/ipc") != ns_writer
        assert ns_writer != os.readlink("/proc/self/ns/ipc")
        # POSIX shared memory (/dev/shm) and a POSIX message queue made by one container are
        # seen by the other, not by a container of another pod
        assert _exec(rt, reader, "cat /dev/shm/seg") == "from-writer"
        assert _exec(rt, reader, "ls /dev/mqueue") == "q1"
        _exec(rt, reader, "echo from-reader > /dev/shm/back")
        assert _exec(rt, writer, "cat /dev/shm/back") == "from-reader"
        assert _exec(rt, stranger, "ls /dev/shm /dev/mqueue") == "/dev/mqueue:\n\n/dev/shm:"
        assert _exec(rt, reader, "grep ' /dev/shm ' /proc/mounts").split()[2] == "tmpfs"
    finally:
        pod.remove()
        other.remove()
    assert not os.path.exists(volumes.pod_dir(rt.agent_root, pod.uid))  # type: ignore[attr-defined]


def test_oom_killed_from_the_kernel_counter(rt: EngineRuntime) -> None:
    pod = Pod(rt, "oom")
    try:
        # `tail /dev/zero` buffers one endless line: anonymous memory past the 16 MiB limit
        hog = pod.run("hog", "tail /dev/zero", memory=16 * 1024 * 1024)
        st = _exited(rt, hog)
        assert (st.exit_code, st.reason) == (137, "OOMKilled")
        # a SIGKILL that is not the OOM killer's, with the same limit: exit 137, not OOMKilled
        victim = pod.run("victim", "exec sleep 60", memory=16 * 1024 * 1024)
        rt.engine.kill(victim, "SIGKILL")
        st = _exited(rt, victim)
        assert (st.exit_code, st.reason) == (137, "Error")
    finally:
        pod.remove()
