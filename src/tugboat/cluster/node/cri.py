"""The node agent's one narrow interface to a container engine (the role of Kubernetes' CRI).

:class:`RuntimeService` is what the pod workers call; :class:`EngineRuntime` implements it over
the in-process engine facade :class:`tugboat.engine.engine.Engine` (same data root as
``tug daemon``, so ``tug ps`` against that root shows the pods' containers, named as the
kubelet's dockershim named them: ``k8s_<container>_<pod>_<namespace>_<uid>_<attempt>``).

A sandbox is a pause container (a long ``sleep`` of a busybox image the agent provides) that
holds the pod's network namespace on the node's pod network; every container of the pod joins
it (``NetworkMode: container:<sandbox>``), so they share an IP and localhost. All methods
block: call them from an executor.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

from tugboat.errors import NotFound, TugError

LABEL_POD_UID = "io.kubernetes.pod.uid"
LABEL_POD_NAME = "io.kubernetes.pod.name"
LABEL_POD_NS = "io.kubernetes.pod.namespace"
LABEL_CONTAINER = "io.kubernetes.container.name"
LABEL_ATTEMPT = "io.kubernetes.container.attempt"
LABEL_SANDBOX = "io.kubernetes.docker.type"  # "podsandbox" | "container"
PAUSE_IMAGE = "tugboat/pause:1"


@dataclass
class Mount:
    host_path: str
    container_path: str
    readonly: bool = False


@dataclass
class SandboxConfig:
    uid: str
    namespace: str
    name: str
    hostname: str
    network: str | None  # engine NetworkMode of the sandbox ("none": the agent wires it); None = host network
    dns: list[str] = field(default_factory=list)
    dns_search: list[str] = field(default_factory=list)
    dns_options: list[str] = field(default_factory=list)
    # the pod's /dev/shm (a tmpfs the agent mounted on the host; every container binds it), or
    # None; host_ipc: the pod uses the machine's IPC namespace (spec.hostIPC)
    shm: str | None = None
    host_ipc: bool = False


@dataclass
class ContainerConfig:
    name: str
    image: str
    attempt: int = 0
    command: list[str] | None = None  # overrides ENTRYPOINT (None: the image's)
    args: list[str] | None = None  # overrides CMD (None: the image's, unless command is given)
    env: list[str] = field(default_factory=list)
    working_dir: str | None = None
    mounts: list[Mount] = field(default_factory=list)
    tty: bool = False
    stdin: bool = False
    hostname: str | None = None
    memory_limit: int | None = None
    cpu_quota: int | None = None  # microseconds per 100 ms period
    cpu_shares: int | None = None
    privileged: bool = False
    user: str | None = None  # "uid[:gid]"
    groups: list[int] = field(default_factory=list)  # supplementary gids (fsGroup, supplementalGroups)
    read_only_rootfs: bool = False
    cap_add: list[str] = field(default_factory=list)
    cap_drop: list[str] = field(default_factory=list)


@dataclass
class ContainerStatus:
    id: str
    name: str
    state: str  # created | running | exited
    exit_code: int = 0
    reason: str = ""
    started_at: str | None = None
    finished_at: str | None = None
    image: str = ""
    image_id: str = ""
    pid: int = 0
    attempt: int = 0
    log_path: str = ""


class RuntimeService(Protocol):
    def image_id(self, image: str) -> str | None: ...
    def pull_image(self, image: str, auth: dict | None = None) -> str: ...
    def run_sandbox(self, cfg: SandboxConfig) -> tuple[str, str]: ...
    def sandbox_pid(self, sandbox_id: str) -> int: ...
    def stop_sandbox(self, sandbox_id: str) -> None: ...
    def create_container(self, sandbox_id: str, pod: SandboxConfig, cfg: ContainerConfig) -> str: ...
    def start_container(self, cid: str) -> None: ...
    def stop_container(self, cid: str, timeout: int) -> None: ...
    def remove_container(self, cid: str) -> None: ...
    def status(self, cid: str) -> ContainerStatus: ...
    def list_pod_containers(self, uid: str | None = None) -> list[dict]: ...
    def exec_sync(self, cid: str, cmd: list[str], timeout: float) -> tuple[int, bytes]: ...
    def stats(self, cid: str) -> dict: ...


def _docker_name(*parts: str | int) -> str:
    return "_".join(str(p) for p in parts)


class EngineRuntime:
    """:class:`RuntimeService` over :class:`tugboat.engine.engine.Engine`."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self._pull_lock = threading.Lock()

    # ---- images
    def image_id(self, image: str) -> str | None:
        try:
            return str(self.engine.images.resolve(image).id)
        except NotFound:
            return None
        except TugError:
            return None

    def pull_image(self, image: str, auth: dict | None = None) -> str:
        from tugboat.distribution.client import RegistryClient

        with self._pull_lock:
            img = RegistryClient().pull(self.engine.images, image, auth=auth)
        return str(img.id)

    def ensure_pause_image(self) -> None:
        if self.image_id(PAUSE_IMAGE) is None:
            from tugboat.images.bootstrap import bootstrap_busybox

            bootstrap_busybox(self.engine.images, PAUSE_IMAGE)

    # ---- sandboxes
    def run_sandbox(self, cfg: SandboxConfig) -> tuple[str, str]:
        """Start the pause container; returns (sandbox id, pod IP or "")."""
        self.ensure_pause_image()
        host: dict[str, Any] = {"NetworkMode": cfg.network or "host",
                                "IpcMode": "host" if cfg.host_ipc else "shareable",
                                "LogConfig": {"Type": "none", "Config": {}}}  # pause prints nothing
        if cfg.shm and not cfg.host_ipc:
            host["Mounts"] = [{"Type": "bind", "Source": cfg.shm, "Target": "/dev/shm"}]
        if cfg.dns:
            host.update(Dns=cfg.dns, DnsSearch=cfg.dns_search, DnsOptions=cfg.dns_options)
        labels = {LABEL_POD_UID: cfg.uid, LABEL_POD_NAME: cfg.name, LABEL_POD_NS: cfg.namespace,
                  LABEL_SANDBOX: "podsandbox"}
        body = {"Image": PAUSE_IMAGE, "Cmd": ["sleep", "2147483647"], "Hostname": cfg.hostname[:63],
                "Labels": labels, "HostConfig": host}
        name = _docker_name("k8s", "POD", cfg.name, cfg.namespace, cfg.uid, 0)
        with contextlib.suppress(NotFound):
            self.engine.remove(name, force=True)
        sid = self.engine.create(body, name=name)["Id"]
        try:
            self.engine.start(sid)
        except BaseException:
            with contextlib.suppress(TugError):
                self.engine.remove(sid, force=True)
            raise
        ip = ""
        if cfg.network not in (None, "none", "host"):  # an engine network: it gave the address
            nets = (self.engine.inspect(sid).get("NetworkSettings") or {}).get("Networks") or {}
            ip = next((n["IPAddress"] for n in nets.values() if n.get("IPAddress")), "")
        return sid, ip

    def sandbox_pid(self, sandbox_id: str) -> int:
        return int(self.engine.get(sandbox_id).state.get("Pid") or 0)

    def stop_sandbox(self, sandbox_id: str) -> None:
        with contextlib.suppress(NotFound):
            self.engine.remove(sandbox_id, force=True)

    # ---- containers
    def create_container(self, sandbox_id: str, pod: SandboxConfig, cfg: ContainerConfig) -> str:
        image = self.engine.images.resolve(cfg.image)
        icfg = (image.config or {}).get("config") or {}
        # kube's command/args semantics over the image's ENTRYPOINT/CMD
        if cfg.command is not None:
            entrypoint, cmd = list(cfg.command), list(cfg.args or [])
        elif cfg.args is not None:
            entrypoint, cmd = list(icfg.get("Entrypoint") or []), list(cfg.args)
        else:
            entrypoint, cmd = list(icfg.get("Entrypoint") or []), list(icfg.get("Cmd") or [])
        mounts = [{"Type": "bind", "Source": m.host_path, "Target": m.container_path, "ReadOnly": m.readonly}
                  for m in cfg.mounts]
        # the pod's IPC: the sandbox's IPC namespace and the pod's /dev/shm (unless a volume is there)
        if pod.shm and not pod.host_ipc and not any(m.container_path.rstrip("/") == "/dev/shm" for m in cfg.mounts):
            mounts.append({"Type": "bind", "Source": pod.shm, "Target": "/dev/shm", "ReadOnly": False})
        host: dict[str, Any] = {
            "NetworkMode": f"container:{sandbox_id}",
            "IpcMode": "host" if pod.host_ipc else f"container:{sandbox_id}",
            "Mounts": mounts,
            "Privileged": cfg.privileged,
            "ReadonlyRootfs": cfg.read_only_rootfs,
            "CapAdd": cfg.cap_add or None,
            "CapDrop": cfg.cap_drop or None,
        }
        if cfg.memory_limit:
            host["Memory"] = int(cfg.memory_limit)
            host["MemorySwap"] = int(cfg.memory_limit)
        if cfg.cpu_quota:
            host["CpuQuota"] = int(cfg.cpu_quota)
            host["CpuPeriod"] = 100000
        if cfg.cpu_shares:
            host["CpuShares"] = int(cfg.cpu_shares)
        labels = {LABEL_POD_UID: pod.uid, LABEL_POD_NAME: pod.name, LABEL_POD_NS: pod.namespace,
                  LABEL_CONTAINER: cfg.name, LABEL_ATTEMPT: str(cfg.attempt), LABEL_SANDBOX: "container"}
        body: dict[str, Any] = {
            "Image": cfg.image, "Entrypoint": entrypoint or None, "Cmd": cmd or None, "Env": cfg.env,
            "Labels": labels, "Tty": cfg.tty, "OpenStdin": cfg.stdin, "AttachStdin": False,
            "Hostname": (cfg.hostname or pod.hostname)[:63], "HostConfig": host,
        }
        if not entrypoint and not cmd:
            raise TugError(f"no command specified for container {cfg.name}")
        if cfg.working_dir:
            body["WorkingDir"] = cfg.working_dir
        if cfg.user:
            body["User"] = cfg.user
        if cfg.groups:
            host["GroupAdd"] = [str(g) for g in cfg.groups]
        name = _docker_name("k8s", cfg.name, pod.name, pod.namespace, pod.uid, cfg.attempt)
        with contextlib.suppress(NotFound):
            self.engine.remove(name, force=True)
        return str(self.engine.create(body, name=name)["Id"])

    def start_container(self, cid: str) -> None:
        self.engine.start(cid)

    def stop_container(self, cid: str, timeout: int) -> None:
        with contextlib.suppress(NotFound):
            c = self.engine.get(cid)
            if c.running:
                self.engine.stop(cid, timeout=timeout)

    def remove_container(self, cid: str) -> None:
        with contextlib.suppress(NotFound):
            self.engine.remove(cid, force=True)

    def status(self, cid: str) -> ContainerStatus:
        c = self.engine.get(cid)
        st = c.state
        labels = (c.data.get("Config") or {}).get("Labels") or {}
        running = bool(st.get("Running"))
        started = st.get("StartedAt")
        state = "running" if running else ("created" if not started or started.startswith("0001") else "exited")
        code = int(st.get("ExitCode") or 0)
        reason = ""
        if state == "exited":
            # the engine reads the kernel's oom_kill counter of the container's memory cgroup at exit
            reason = "OOMKilled" if st.get("OOMKilled") else ("Completed" if code == 0 else "Error")
        return ContainerStatus(
            id=c.id, name=labels.get(LABEL_CONTAINER, c.name), state=state, exit_code=code, reason=reason,
            started_at=started if started and not started.startswith("0001") else None,
            finished_at=st.get("FinishedAt") if state == "exited" else None,
            image=(c.data.get("Config") or {}).get("Image", ""), image_id=c.data.get("Image", ""),
            pid=int(st.get("Pid") or 0), attempt=int(labels.get(LABEL_ATTEMPT) or 0),
            log_path=c.data.get("LogPath", ""),
        )

    def list_pod_containers(self, uid: str | None = None) -> list[dict]:
        out = []
        for c in self.engine.containers():
            labels = (c.data.get("Config") or {}).get("Labels") or {}
            if LABEL_POD_UID not in labels or (uid is not None and labels[LABEL_POD_UID] != uid):
                continue
            out.append({"id": c.id, "labels": labels, "running": c.running})
        return out

    def exec_sync(self, cid: str, cmd: list[str], timeout: float) -> tuple[int, bytes]:
        from tugboat.engine.exec import exec_create, exec_start

        eid = exec_create(self.engine, cid, {"Cmd": cmd, "AttachStdout": True, "AttachStderr": True})
        rec = exec_start(self.engine, eid)
        if not rec.done.wait(timeout):
            with contextlib.suppress(OSError):
                os.kill(rec.pid, 9)
            rec.done.wait(2)
            return -1, b"timeout"
        out = b""
        if rec.pio is not None:
            rec.pio.closed.wait(1)
            out = b"".join(chunk for _s, chunk in rec.pio.buffer or [])
        return int(rec.exit_code if rec.exit_code is not None else -1), out

    def stats(self, cid: str) -> dict:
        c = self.engine.get(cid)
        return dict(self.engine.runtime.stats(c.id, int(c.state.get("Pid") or 0)))


def now() -> float:
    return time.time()
