"""One worker per pod: level-triggered reconciliation of a pod's sandbox and containers, as the kubelet.

The worker wakes on a pod change, on a container exit (engine event) or on a timer (back-off
expiry, probe due), reads the actual state from the runtime, makes the next steps toward the spec
(sandbox, init containers in order, app containers, restarts with back-off, probes) and posts
the pod's status when it changed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tugboat.cluster.client import resources as R
from tugboat.cluster.client.rest import ApiError, NotFoundError
from tugboat.cluster.client.util import now as kube_now
from tugboat.cluster.node import podspec, satokens, volumes
from tugboat.cluster.node.cri import ContainerConfig, ContainerStatus, SandboxConfig
from tugboat.cluster.node.probes import ProbeState, run_probe
from tugboat.errors import TugError
from tugboat.util.resolv import parse_resolv, read_host_resolv, render_resolv_conf

if TYPE_CHECKING:
    from tugboat.cluster.node.agent import NodeAgent

log = logging.getLogger("tugboat.cluster.node")


def _host_resolv() -> tuple[list[str], list[str], list[str]]:
    """(nameservers, searches, options) of the node's own resolv.conf."""
    return parse_resolv(read_host_resolv())


def pod_dns(spec: dict, namespace: str, cluster_dns: str | None, domain: str) -> tuple[list[str], list[str], list[str]]:
    """(nameservers, searches, options) of a pod's resolv.conf, as the kubelet computes them:
    ClusterFirst (ClusterFirstWithHostNet for host-network pods) → the cluster DNS with the
    namespace's search path and ndots:5; Default (and ClusterFirst on the host network) → the
    node's resolv.conf; None → nothing; then dnsConfig appended (options override by name)."""
    policy = spec.get("dnsPolicy") or "ClusterFirst"
    host_network = bool(spec.get("hostNetwork"))
    if policy == "None":
        servers, search, opts = [], [], []
    elif cluster_dns and (policy == "ClusterFirstWithHostNet" or (policy == "ClusterFirst" and not host_network)):
        servers = [cluster_dns]
        search = [f"{namespace}.svc.{domain}", f"svc.{domain}", domain]
        opts = ["ndots:5"]
    else:
        servers, search, opts = _host_resolv()
    dc = spec.get("dnsConfig") or {}
    servers = list(dict.fromkeys([*servers, *(dc.get("nameservers") or [])]))[:3]
    search = list(dict.fromkeys([*search, *(dc.get("searches") or [])]))[:32]
    merged: dict[str, str] = {}
    for o in opts:
        merged[o.partition(":")[0]] = o
    for o in dc.get("options") or []:
        merged[o["name"]] = o["name"] + (f":{o['value']}" if o.get("value") else "")
    return servers, search, list(merged.values())


BACKOFF_START = 10.0
BACKOFF_MAX = 300.0
BACKOFF_RESET_AFTER = 600.0
FIRST_STATUS_DELAY = 0.5  # seconds after the sandbox is up before its status is posted alone
# TUG_POD_TRACE=FILE: each worker appends one JSON line with the monotonic time of every step of
# its pod's start (bench/pods.py reads it to show where start-up latency goes)
_TRACE = os.environ.get("TUG_POD_TRACE") or ""


@dataclass
class CState:
    name: str
    spec: dict[str, Any]
    init: bool = False
    cid: str | None = None
    prev_cid: str | None = None
    restart_count: int = 0
    attempt: int = 0
    status: ContainerStatus | None = None
    last_terminated: dict[str, Any] | None = None
    handled_exit: str | None = None  # cid whose exit was processed
    waiting_reason: str = "ContainerCreating"
    waiting_message: str = ""
    backoff: float = 0.0
    backoff_until: float = 0.0
    done: bool = False  # will not run again (succeeded init container, or no restart)
    probes: dict[str, ProbeState] = field(default_factory=dict)
    ready: bool = False
    started: bool = False
    image_id: str = ""
    running_since: float = 0.0
    killed_by_liveness: bool = False
    backoff_delay: float = 0.0


def _state_dict(st: ContainerStatus, message: str = "") -> dict[str, Any]:
    if st.state == "running":
        return {"running": {"startedAt": st.started_at}}
    if st.state == "exited":
        t = {"exitCode": st.exit_code, "reason": st.reason, "startedAt": st.started_at,
             "finishedAt": st.finished_at, "containerID": f"tugboat://{st.id}"}
        if message:
            t["message"] = message
        return {"terminated": t}
    return {"waiting": {"reason": "ContainerCreating"}}


class PodWorker:
    def __init__(self, agent: NodeAgent, uid: str, pod: dict[str, Any]) -> None:
        self.agent = agent
        self.uid = uid
        self.pod = pod
        self.wake = asyncio.Event()
        self.sandbox_id: str | None = None
        self.pod_ip = ""
        self.vols: dict[str, str] | None = None
        self.cs: dict[str, CState] = {}
        self.start_time: str | None = None
        self.posted: dict[str, Any] | None = None
        self.config_error: str | None = None
        self.config_retry_at = 0.0
        self.phase_final: str | None = None
        self.conditions_since: dict[str, tuple[str, str]] = {}
        self.task: asyncio.Task | None = None
        self.gone = False
        self._posting_first = False
        self._slot = False  # holds one of agent.pod_starts
        self.trace: list[tuple[str, float]] | None = [("seen", time.monotonic())] if _TRACE else None
        spec = pod.get("spec") or {}
        for c in spec.get("initContainers") or []:
            self.cs[c["name"]] = CState(c["name"], c, init=True)
        for c in spec.get("containers") or []:
            self.cs[c["name"]] = CState(c["name"], c)

    # ---- plumbing
    @property
    def key(self) -> str:
        md = self.pod["metadata"]
        return f"{md['namespace']}/{md['name']}"

    def update(self, pod: dict[str, Any]) -> None:
        self.pod = pod
        self.wake.set()

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self.run())

    async def _x(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self.agent.executor, fn, *args)

    def mark(self, step: str) -> None:
        if self.trace is not None:
            self.trace.append((step, time.monotonic()))

    def _trace_done(self) -> None:
        if self.trace is None:
            return
        import json

        line = json.dumps({"pod": self.pod["metadata"]["name"], "steps": self.trace}) + "\n"
        self.trace = None
        with contextlib.suppress(OSError), open(_TRACE, "a") as f:
            f.write(line)

    def event(self, etype: str, reason: str, message: str, container: str | None = None) -> None:
        obj = self.pod
        if container is not None:
            obj = {**self.pod, "fieldPath": f"spec.containers{{{container}}}"}
        with contextlib.suppress(Exception):
            self.agent.recorder.event(obj, etype, reason, message)

    async def run(self) -> None:
        while not self.gone:
            self.wake.clear()
            try:
                delay = await self.sync()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("pod %s: sync failed", self.key)
                delay = 2.0
            if self.gone:
                break
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.wake.wait(), max(0.05, delay))

    # ---- the reconcile step
    async def sync(self) -> float:
        pod = self.pod
        md, spec = pod["metadata"], pod.get("spec") or {}
        if md.get("deletionTimestamp"):
            grace = md.get("deletionGracePeriodSeconds")
            if grace is None:
                grace = spec.get("terminationGracePeriodSeconds", 30)
            await self.kill_pod(int(grace))
            await self.post_status(final=True)
            try:
                await self.agent.client.delete(R.PODS, md["name"], md["namespace"], grace_period=0,
                                               preconditions={"uid": self.uid})
            except (NotFoundError, ApiError):
                pass
            await self.cleanup()
            return 1.0
        if self.phase_final:
            return 30.0
        now = time.monotonic()
        first_post: asyncio.Future | None = None
        if self.sandbox_id is None:
            if self.config_error and now < self.config_retry_at:
                return self.config_retry_at - now
            # a pod being started holds one of the agent's start slots until its containers are
            # started or it must pull an image (see NodeAgent.pod_starts)
            await self.agent.pod_starts.acquire()
            self._slot = True
            if self.pod["metadata"].get("deletionTimestamp") or self.gone:
                self._release_slot()  # deleted while it waited: the next step removes it
                return 0.0
        try:
            if self.sandbox_id is None:
                if not await self.setup_sandbox():
                    self._release_slot()
                    await self.post_status()
                    return max(0.1, self.config_retry_at - time.monotonic())
                # the sandbox's status (pod IP, start time) goes out if the containers take a
                # while to start (an image pull, a busy node); when they are up sooner, one PATCH
                # carries both (as the kubelet's status manager coalesces): a PATCH less per pod
                # for the API server and every watcher. A post under way is awaited (in order).
                first_post = asyncio.ensure_future(self._post_later(FIRST_STATUS_DELAY))
            await self.refresh()
            await self.refresh_tokens()
            policy = spec.get("restartPolicy") or "Always"
            self.handle_exits(policy)
            if not self.phase_final:
                await self.start_containers()
                self._release_slot()
                await self.run_probes()
        finally:
            self._release_slot()
            if first_post is not None:
                if self._posting_first:
                    await first_post
                else:
                    first_post.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await first_post
        await self.post_status()
        if self.phase_final:
            return 30.0
        # next wake-up: back-off expiry, next probe, or a slow poll
        nxt = 5.0
        t = time.monotonic()
        for c in self.cs.values():
            if c.backoff_until > t:
                nxt = min(nxt, c.backoff_until - t)
            for p in c.probes.values():
                nxt = min(nxt, max(0.05, p.next_at - t))
        return nxt

    def _release_slot(self) -> None:
        if self._slot:
            self._slot = False
            self.agent.pod_starts.release()

    async def _post_later(self, delay: float) -> None:
        await asyncio.sleep(delay)
        self._posting_first = True
        try:
            await self.post_status()
        finally:
            self._posting_first = False

    async def setup_sandbox(self) -> bool:
        pod = self.pod
        md, spec = pod["metadata"], pod.get("spec") or {}
        agent = self.agent
        try:
            self.mark("sync")
            cms, secrets, pv_paths = await agent.fetch_refs(pod)
            sa_tokens = await agent.sa_tokens.for_pod(pod) if satokens.token_sources(pod) else None
            self.mark("refs")
            host_ipc = bool(spec.get("hostIPC"))

            def prepare() -> tuple[dict[str, str], str | None]:
                vols = volumes.prepare_volumes(agent.root, pod, configmaps=cms, secrets=secrets, pv_paths=pv_paths,
                                               node_allocatable=agent.allocatable, sa_tokens=sa_tokens)
                return vols, None if host_ipc else volumes.pod_shm(agent.root, self.uid)

            self.vols, shm = await self._x(prepare)
            self._refs = (cms, secrets)
        except (podspec.ConfigError, OSError, TugError, RuntimeError) as e:
            msg = str(e)
            self.config_error = msg
            self.config_retry_at = time.monotonic() + 2.0
            for c in self.cs.values():
                c.waiting_reason, c.waiting_message = "CreateContainerConfigError", msg
            self.event("Warning", "FailedMount" if "volume" in msg or "claim" in msg else "Failed", msg)
            return False
        self.config_error = None
        host_network = bool(spec.get("hostNetwork"))
        dns, search, opts = pod_dns(spec, md["namespace"], agent.dns_ip, agent.domain)
        hostname = spec.get("hostname") or md["name"]
        sb = SandboxConfig(uid=self.uid, namespace=md["namespace"], name=md["name"], hostname=hostname,
                           network=None if host_network else "none", dns=dns, dns_search=search,
                           dns_options=opts, shm=shm, host_ipc=host_ipc)
        self.sandbox_cfg = sb
        # the pod's /etc/resolv.conf and /etc/hosts, shared by its containers
        pdir = volumes.pod_dir(agent.root, self.uid)
        os.makedirs(pdir, exist_ok=True)
        self.mark("volumes")
        if await self.adopt(host_network):
            self.start_time = self.start_time or (pod.get("status") or {}).get("startTime") or kube_now()
            return True
        try:
            self.mark("adopt-checked")
            self.sandbox_id, ip = await self._x(agent.runtime.run_sandbox, sb)
            self.mark("sandbox")
        except TugError as e:
            self.config_error = f"failed to create pod sandbox: {e}"
            self.config_retry_at = time.monotonic() + 2.0
            self.event("Warning", "FailedCreatePodSandBox", self.config_error)
            return False
        if host_network:
            self.pod_ip = agent.node_ip
        else:
            try:
                pid = await self._x(agent.runtime.sandbox_pid, self.sandbox_id)
                self.mark("sandbox-pid")
                self.pod_ip = await self._x(agent.podnet.attach, self.uid, pid)
                self.mark("network")
            except TugError as e:
                await self._x(agent.runtime.stop_sandbox, self.sandbox_id)
                self.sandbox_id = None
                self.config_error = f"failed to set up pod network: {e}"
                self.config_retry_at = time.monotonic() + 2.0
                self.event("Warning", "FailedCreatePodSandBox", self.config_error)
                return False
        _ = ip
        resolv = os.path.join(pdir, "resolv.conf")
        volumes._write(resolv, render_resolv_conf(dns, search, opts).encode(), 0o644)
        fqdn = f"{hostname}.{spec['subdomain']}.{md['namespace']}.svc.{agent.domain}" if spec.get("subdomain") else ""
        hosts = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
        hosts += f"{self.pod_ip}\t{(fqdn + chr(9)) if fqdn else ''}{hostname}\n"
        for ha in spec.get("hostAliases") or []:
            hosts += f"{ha['ip']}\t{' '.join(ha.get('hostnames') or [])}\n"
        volumes._write(os.path.join(pdir, "hosts"), hosts.encode(), 0o644)
        self.start_time = self.start_time or kube_now()
        self.mark("pod-files")
        return True

    async def adopt(self, host_network: bool) -> bool:
        """After an agent restart: take over the pod's running sandbox and containers instead of
        recreating them (the kubelet's behaviour), so a restarted agent restarts nothing."""
        from tugboat.cluster.node.cri import LABEL_ATTEMPT, LABEL_CONTAINER, LABEL_SANDBOX

        agent = self.agent
        if agent.adoptable is not None and self.uid not in agent.adoptable:
            return False  # nothing of this pod existed when the agent started
        found = await self._x(agent.runtime.list_pod_containers, self.uid)
        sandbox = next((c for c in found if c["labels"].get(LABEL_SANDBOX) == "podsandbox" and c["running"]), None)
        if sandbox is None:
            return False
        ip = agent.node_ip if host_network else (agent.podnet.ip_of(self.uid) if agent.podnet else None)
        if not ip:
            return False
        self.sandbox_id, self.pod_ip = sandbox["id"], ip
        latest: dict[str, tuple[int, str]] = {}
        for c in found:
            name = c["labels"].get(LABEL_CONTAINER)
            if not name or name not in self.cs:
                continue
            attempt = int(c["labels"].get(LABEL_ATTEMPT) or 0)
            if name not in latest or attempt > latest[name][0]:
                latest[name] = (attempt, c["id"])
        for name, (attempt, cid) in latest.items():
            cs = self.cs[name]
            cs.cid, cs.attempt, cs.restart_count = cid, attempt + 1, attempt
            cs.waiting_reason = ""
            with contextlib.suppress(TugError):
                cs.status = await self._x(agent.runtime.status, cid)
                cs.image_id = cs.status.image_id
            if cs.status is not None and cs.status.state == "exited":
                cs.handled_exit = cid
                cs.done = cs.init and cs.status.exit_code == 0
            if cs.status is not None and cs.status.state == "running":
                cs.running_since = time.monotonic()
                for kind in ("startup", "liveness", "readiness"):
                    p = cs.spec.get(f"{kind}Probe")
                    if p and podspec.validate_probe(p) is None:
                        cs.probes[kind] = ProbeState(p, kind)
                cs.started = "startup" not in cs.probes
                cs.ready = not cs.init and "readiness" not in cs.probes and cs.started
        # init containers that ran before are done when an app container exists
        if any(not c.init and c.cid for c in self.cs.values()):
            for c in self.cs.values():
                if c.init:
                    c.done = True
        log.info("pod %s: adopted sandbox %s (%s)", self.key, self.sandbox_id[:12], self.pod_ip)
        return True

    async def refresh(self) -> None:
        ids = [(c, c.cid) for c in self.cs.values() if c.cid]
        if not ids:
            return

        def read() -> list[ContainerStatus | None]:
            out: list[ContainerStatus | None] = []
            for _c, cid in ids:
                try:
                    out.append(self.agent.runtime.status(cid))
                except TugError:
                    out.append(None)
            return out

        for (c, _cid), st in zip(ids, await self._x(read), strict=True):
            c.status = st

    def handle_exits(self, policy: str) -> None:
        now = time.monotonic()
        for c in self.cs.values():
            st = c.status
            if st is None or st.state != "exited" or c.handled_exit == st.id:
                continue
            c.handled_exit = st.id
            c.ready = False
            c.started = False
            c.probes = {}
            msg = ""
            if st.reason == "OOMKilled":
                msg = ""
            c.last_terminated = _state_dict(st, msg)
            ok = st.exit_code == 0 and not c.killed_by_liveness
            c.killed_by_liveness = False
            if c.init:
                if ok:
                    c.done = True
                    continue
                restart = policy != "Never"
            else:
                restart = policy == "Always" or (policy == "OnFailure" and not ok)
            if not restart:
                c.done = True
                continue
            ran = now - c.running_since if c.running_since else 0
            if ran > BACKOFF_RESET_AFTER:
                c.backoff = 0.0
            # as the kubelet: the first restart is immediate, then 10 s, 20 s, … up to 5 min
            delay = c.backoff
            c.backoff = BACKOFF_START if c.backoff == 0 else min(c.backoff * 2, BACKOFF_MAX)
            c.backoff_until = now + delay
            c.restart_count += 1
            c.waiting_reason = "CrashLoopBackOff" if delay else "ContainerCreating"
            c.waiting_message = (f"back-off {int(delay)}s restarting failed container={c.name} "
                                 f"pod={self.pod['metadata']['name']}_{self.pod['metadata']['namespace']}"
                                 f"({self.uid})") if delay else ""
            c.backoff_delay = delay
            if delay:
                self.event("Warning", "BackOff", "Back-off restarting failed container "
                           f"{c.name} in pod {self.pod['metadata']['name']}_{self.pod['metadata']['namespace']}"
                           f"({self.uid})", c.name)
        inits = [c for c in self.cs.values() if c.init]
        apps = [c for c in self.cs.values() if not c.init]
        if policy == "Never" and any(c.done and c.status and c.status.exit_code != 0 for c in inits):
            self.phase_final = "Failed"
        elif apps and all(c.done for c in apps):
            failed = any(c.status and c.status.exit_code != 0 for c in apps)
            self.phase_final = "Failed" if failed else "Succeeded"

    async def start_containers(self) -> None:
        now = time.monotonic()
        inits = [c for c in self.cs.values() if c.init]
        for c in inits:
            if c.done:
                continue
            if c.status is not None and c.status.state == "running":
                return
            if now >= c.backoff_until:
                await self.start_one(c)
            return  # init containers run one at a time, in order
        apps = [c for c in self.cs.values() if not c.init]
        todo = [c for c in apps if not c.done and not (c.status is not None and c.status.state == "running")
                and now >= c.backoff_until]
        if todo:
            await asyncio.gather(*(self.start_one(c) for c in todo))

    async def start_one(self, c: CState) -> None:
        agent = self.agent
        pod = self.pod
        spec = pod.get("spec") or {}
        image = c.spec.get("image") or ""
        policy = c.spec.get("imagePullPolicy") or ("Always" if image.endswith(":latest") or ":" not in
                                                    image.rsplit("/", 1)[-1] else "IfNotPresent")
        image_id = await self._x(agent.runtime.image_id, image)
        self.mark(f"{c.name}:image")
        if image_id is None or (policy == "Always" and not agent.offline):
            if policy == "Never":
                c.waiting_reason = "ErrImageNeverPull"
                c.waiting_message = f'Container image "{image}" is not present with pull policy of Never'
                c.backoff_until = time.monotonic() + 5
                self.event("Warning", "ErrImageNeverPull", c.waiting_message, c.name)
                return
            if image_id is None or policy == "Always":
                self._release_slot()  # a pull may take long: other pods start meanwhile
                self.event("Normal", "Pulling", f'Pulling image "{image}"', c.name)
                t0 = time.monotonic()
                try:
                    auth = await agent.pull_auth(pod, image)
                    image_id = await self._x(agent.runtime.pull_image, image, auth)
                    self.event("Normal", "Pulled", f'Successfully pulled image "{image}" in '
                               f"{time.monotonic() - t0:.3f}s", c.name)
                except Exception as e:
                    if image_id is None:
                        first = c.waiting_reason not in ("ErrImagePull", "ImagePullBackOff")
                        c.waiting_reason = "ErrImagePull" if first else "ImagePullBackOff"
                        c.waiting_message = (f'failed to pull and unpack image "{image}": {e}' if first else
                                             f'Back-off pulling image "{image}": ErrImagePull: {e}')
                        c.backoff = BACKOFF_START if not c.backoff else min(c.backoff * 2, BACKOFF_MAX)
                        c.backoff_until = time.monotonic() + (1.0 if first else c.backoff)
                        # the kubelet's events: the pull's error, then the state it leads to
                        self.event("Warning", "Failed", f'Failed to pull image "{image}": {e}', c.name)
                        if not first:
                            self.event("Normal", "BackOff", f'Back-off pulling image "{image}"', c.name)
                        self.event("Warning", "Failed", f"Error: {c.waiting_reason}", c.name)
                        return
        else:
            if c.restart_count == 0 and c.cid is None:
                self.event("Normal", "Pulled", f'Container image "{image}" already present on machine', c.name)
        c.image_id = image_id or ""
        cms, secrets = getattr(self, "_refs", ({}, {}))
        try:
            # The kubelet fills status.podIP/hostIP from the sandbox it made, not from the API copy,
            # whose status may not carry them yet (the first status PATCH can still be on its way).
            ips = {"hostIP": agent.node_ip, "hostIPs": [{"ip": agent.node_ip}]}
            if self.pod_ip:
                ips.update(podIP=self.pod_ip, podIPs=[{"ip": self.pod_ip}])
            env_pod = {**pod, "status": {**(pod.get("status") or {}), **ips}}
            env = podspec.container_env(env_pod, c.spec, configmaps=cms, secrets=secrets,
                                        node_allocatable=agent.allocatable,
                                        service_env=agent.service_env(pod) if spec.get("enableServiceLinks", True)
                                        else {})
            cmd, args = podspec.command_args(c.spec, env)
            tlog = os.path.join(volumes.pod_dir(agent.root, self.uid), "termination", f"{c.name}-{c.attempt}")
            os.makedirs(os.path.dirname(tlog), exist_ok=True)
            open(tlog, "w").close()
            mounts = volumes.container_mounts(c.spec, self.vols or {}, termination_log=tlog)
            pdir = volumes.pod_dir(agent.root, self.uid)
            names = {m.container_path for m in mounts}
            from tugboat.cluster.node.cri import Mount

            if "/etc/resolv.conf" not in names:
                mounts.append(Mount(os.path.join(pdir, "resolv.conf"), "/etc/resolv.conf", True))
            if "/etc/hosts" not in names and not spec.get("hostNetwork"):
                mounts.append(Mount(os.path.join(pdir, "hosts"), "/etc/hosts", True))
        except podspec.ConfigError as e:
            c.waiting_reason, c.waiting_message = "CreateContainerConfigError", str(e)
            c.backoff_until = time.monotonic() + 2
            self.event("Warning", "Failed", f"Error: {e}", c.name)
            return
        sc = c.spec.get("securityContext") or {}
        psc = spec.get("securityContext") or {}
        caps = sc.get("capabilities") or {}
        res = podspec.resources(c.spec)
        cfg = ContainerConfig(
            name=c.name, image=image, attempt=c.attempt, command=cmd, args=args, env=env,
            working_dir=c.spec.get("workingDir"), mounts=mounts, tty=bool(c.spec.get("tty")),
            stdin=bool(c.spec.get("stdin")), hostname=spec.get("hostname") or pod["metadata"]["name"],
            memory_limit=res.get("memory_limit"), cpu_quota=res.get("cpu_quota"), cpu_shares=res.get("cpu_shares"),
            privileged=bool(sc.get("privileged")), user=podspec.user_of(psc, sc),
            groups=[int(g) for g in [*(psc.get("supplementalGroups") or []),
                                     *([psc["fsGroup"]] if psc.get("fsGroup") is not None else [])]],
            read_only_rootfs=bool(sc.get("readOnlyRootFilesystem")),
            cap_add=list(caps.get("add") or []), cap_drop=list(caps.get("drop") or []),
        )
        assert self.sandbox_id is not None
        try:
            old = c.cid
            self.mark(f"{c.name}:config")
            cid = await self._x(agent.runtime.create_container, self.sandbox_id, self.sandbox_cfg, cfg)
            self.mark(f"{c.name}:created")
            self.event("Normal", "Created", f"Created container {c.name}", c.name)
            c.cid = cid
            c.attempt += 1
            await self._x(agent.runtime.start_container, cid)
            self.mark(f"{c.name}:started")
        except TugError as e:
            c.waiting_reason = "RunContainerError" if c.cid else "CreateContainerError"
            c.waiting_message = str(e)
            c.backoff = BACKOFF_START if not c.backoff else min(c.backoff * 2, BACKOFF_MAX)
            c.backoff_until = time.monotonic() + c.backoff
            self.event("Warning", "Failed", f"Error: {e}", c.name)
            if c.cid:
                c.status = await self._x(agent.runtime.status, c.cid)
            return
        # keep the previous instance for `logs --previous`, drop the one before it
        if c.prev_cid and c.prev_cid != old:
            await self._x(agent.runtime.remove_container, c.prev_cid)
        c.prev_cid = old
        c.running_since = time.monotonic()
        c.waiting_reason, c.waiting_message = "", ""
        c.status = await self._x(agent.runtime.status, cid)
        self.mark(f"{c.name}:status")
        self.event("Normal", "Started", f"Started container {c.name}", c.name)
        # probes restart with the container
        c.probes = {}
        for kind in ("startup", "liveness", "readiness"):
            p = c.spec.get(f"{kind}Probe")
            if p and podspec.validate_probe(p) is None:
                c.probes[kind] = ProbeState(p, kind)
        c.started = "startup" not in c.probes
        c.ready = not c.init and "readiness" not in c.probes and c.started
        post = ((c.spec.get("lifecycle") or {}).get("postStart") or {})
        if post:
            ok, msg = await run_probe(post, self.pod_ip, lambda cmd, t: self._x(
                agent.runtime.exec_sync, cid, cmd, t), self._ports(c))
            if not ok:
                self.event("Warning", "FailedPostStartHook", msg, c.name)
                await self._x(agent.runtime.stop_container, cid, 0)

    def _ports(self, c: CState) -> dict[str, int]:
        return {p["name"]: int(p["containerPort"]) for p in c.spec.get("ports") or [] if p.get("name")}

    async def run_probes(self) -> None:
        now = time.monotonic()
        jobs = []
        for c in self.cs.values():
            if c.status is None or c.status.state != "running" or not c.cid:
                continue
            for kind, p in c.probes.items():
                if kind != "startup" and not c.started:
                    continue
                if kind == "startup" and c.started:
                    continue
                if p.due(now):
                    jobs.append(self._probe(c, kind, p))
        if jobs:
            await asyncio.gather(*jobs)

    async def _probe(self, c: CState, kind: str, p: ProbeState) -> None:
        cid = c.cid
        assert cid is not None
        ok, msg = await run_probe(p.probe, self.pod_ip,
                                  lambda cmd, t: self._x(self.agent.runtime.exec_sync, cid, cmd, t), self._ports(c))
        if not ok:
            self.event("Warning", "Unhealthy", f"{kind.capitalize()} probe failed: {msg}", c.name)
        changed = p.record(ok, msg, time.monotonic())
        if kind == "startup" and p.result is True:
            c.started = True
            c.ready = "readiness" not in c.probes
        elif kind == "readiness" and changed is not None:
            c.ready = bool(changed)
        elif (kind in ("liveness", "startup")) and p.result is False:
            self.event("Normal", "Killing", f"Container {c.name} failed {kind} probe, will be restarted", c.name)
            c.killed_by_liveness = True
            p.result = None
            p.failures = 0
            grace = int((self.pod.get("spec") or {}).get("terminationGracePeriodSeconds", 30))
            await self._x(self.agent.runtime.stop_container, cid, min(grace, 2))
            self.wake.set()

    async def kill_pod(self, grace: int) -> None:
        running = [c for c in self.cs.values() if c.cid and c.status is not None and c.status.state == "running"]
        for c in running:
            pre = ((c.spec.get("lifecycle") or {}).get("preStop") or {})
            if pre and c.cid:
                cid = c.cid
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(run_probe({**pre, "timeoutSeconds": max(1, grace)}, self.pod_ip,
                                                     lambda cmd, t, cid=cid: self._x(
                                                         self.agent.runtime.exec_sync, cid, cmd, t), self._ports(c)),
                                           max(1, grace))
            self.event("Normal", "Killing", f"Stopping container {c.name}", c.name)
        await asyncio.gather(*(self._x(self.agent.runtime.stop_container, c.cid, grace) for c in running if c.cid))
        await self.refresh()
        for c in self.cs.values():
            c.ready = False
            if c.status is not None and c.status.state == "exited":
                c.done = True

    async def refresh_tokens(self) -> None:
        """Renew the service account tokens of the pod's projected volumes that are due (80 % of
        their lifetime), as the kubelet's volume manager does; a failure is retried next sync."""
        if self.vols is None or not satokens.token_sources(self.pod):
            return
        try:
            await satokens.refresh_pod_tokens(self.agent.sa_tokens, self.pod, self.vols)
        except (ApiError, OSError, TugError, RuntimeError) as e:
            log.warning("pod %s: renewing its service account token failed: %s", self.key, e)

    async def cleanup(self) -> None:
        self.agent.sa_tokens.forget(self.uid)
        rt = self.agent.runtime
        ids = [i for c in self.cs.values() for i in (c.cid, c.prev_cid) if i]

        def rm() -> None:
            for i in ids:
                rt.remove_container(i)
            if self.sandbox_id:
                rt.stop_sandbox(self.sandbox_id)
            if self.agent.podnet is not None:
                self.agent.podnet.detach(self.uid)
            volumes.cleanup_pod_dir(self.agent.root, self.uid)

        await self._x(rm)
        self.gone = True
        self.agent.worker_gone(self)

    # ---- status
    def container_status(self, c: CState) -> dict[str, Any]:
        st = c.status
        out: dict[str, Any] = {"name": c.name, "image": c.spec.get("image", ""),
                               "imageID": c.image_id or (st.image_id if st else ""),
                               "ready": bool(c.ready and st is not None and st.state == "running"),
                               "restartCount": c.restart_count, "started": False}
        if st is not None:
            out["containerID"] = f"tugboat://{st.id}"
        if c.waiting_reason and (st is None or st.state != "running"):
            w: dict[str, Any] = {"reason": c.waiting_reason}
            if c.waiting_message:
                w["message"] = c.waiting_message
            out["state"] = {"waiting": w}
        elif st is not None and st.state == "running":
            out["state"] = {"running": {"startedAt": st.started_at}}
            out["started"] = c.started
        elif st is not None and st.state == "exited":
            msg = ""
            tlog = os.path.join(volumes.pod_dir(self.agent.root, self.uid), "termination",
                                f"{c.name}-{max(0, c.attempt - 1)}")
            with contextlib.suppress(OSError), open(tlog, errors="replace") as f:
                msg = f.read(4096)
            out["state"] = _state_dict(st, msg)
        else:
            out["state"] = {"waiting": {"reason": c.waiting_reason or "ContainerCreating"}}
        if (c.last_terminated and "terminated" not in out["state"]) or (c.last_terminated and c.restart_count):
            out["lastState"] = c.last_terminated
        else:
            out["lastState"] = {}
        return out

    def compute_status(self) -> dict[str, Any]:
        pod = self.pod
        spec = pod.get("spec") or {}
        inits = [c for c in self.cs.values() if c.init]
        apps = [c for c in self.cs.values() if not c.init]
        initialized = all(c.done and c.status is not None and c.status.exit_code == 0 for c in inits)
        running = any(c.status is not None and c.status.state == "running" for c in apps)
        restarting = any(c.restart_count and not c.done for c in apps)
        if self.phase_final:
            phase = self.phase_final
        elif initialized and (running or restarting) and self.sandbox_id:
            phase = "Running"
        else:
            phase = "Pending"
        cready = bool(apps) and all(c.ready and c.status is not None and c.status.state == "running" for c in apps)
        if phase in ("Succeeded", "Failed"):
            cready = False
        gates_ok = True
        for g in spec.get("readinessGates") or []:
            cond = next((x for x in (pod.get("status") or {}).get("conditions") or []
                         if x.get("type") == g.get("conditionType")), None)
            if not cond or cond.get("status") != "True":
                gates_ok = False
        t = kube_now()

        def cond(ctype: str, ok: bool, reason: str = "", message: str = "") -> dict[str, Any]:
            val = "True" if ok else "False"
            prev = self.conditions_since.get(ctype)
            if prev is None or prev[0] != val:
                self.conditions_since[ctype] = (val, t)
            d: dict[str, Any] = {"type": ctype, "status": val, "lastProbeTime": None,
                                 "lastTransitionTime": self.conditions_since[ctype][1]}
            if not ok and reason:
                d["reason"] = reason
                if message:
                    d["message"] = message
            return d

        not_ready = [c.name for c in apps if not (c.ready and c.status is not None and c.status.state == "running")]
        nr_msg = f"containers with unready status: [{' '.join(not_ready)}]"
        pending_init = [c.name for c in inits if not c.done]
        reason_cr = "PodCompleted" if phase in ("Succeeded", "Failed") else "ContainersNotReady"
        conds = [
            cond("PodReadyToStartContainers", self.sandbox_id is not None and phase not in ("Succeeded", "Failed")),
            cond("Initialized", initialized, "ContainersNotInitialized",
                 f"containers with incomplete status: [{' '.join(pending_init)}]"),
            cond("Ready", cready and gates_ok, reason_cr, nr_msg),
            cond("ContainersReady", cready, reason_cr, nr_msg),
        ]
        sched = next((x for x in (pod.get("status") or {}).get("conditions") or [] if x.get("type") == "PodScheduled"),
                     {"type": "PodScheduled", "status": "True", "lastProbeTime": None, "lastTransitionTime": t})
        conds.append(sched)
        status: dict[str, Any] = {
            "phase": phase,
            "conditions": conds,
            "hostIP": self.agent.node_ip,
            "hostIPs": [{"ip": self.agent.node_ip}],
            "qosClass": podspec.qos_class(spec),
            "containerStatuses": [self.container_status(c) for c in apps],
        }
        if inits:
            status["initContainerStatuses"] = [self.container_status(c) for c in inits]
        if self.pod_ip:
            status["podIP"] = self.pod_ip
            status["podIPs"] = [{"ip": self.pod_ip}]
        if self.start_time:
            status["startTime"] = self.start_time
        if self.config_error and self.sandbox_id is None and "sandbox" in self.config_error:
            status["message"] = self.config_error
        return status

    async def post_status(self, final: bool = False) -> None:
        status = self.compute_status()
        if final:
            for c in status["containerStatuses"]:
                c["ready"] = False
            for cd in status["conditions"]:
                if cd["type"] in ("Ready", "ContainersReady"):
                    cd["status"] = "False"
        if status == self.posted:
            return
        md = self.pod["metadata"]
        self.mark("patch")
        try:
            await self.agent.client.patch(R.PODS, md["name"], {"status": status}, md["namespace"],
                                          subresource="status")
            self.mark("patched")
            if self.trace is not None and any(cd["type"] == "Ready" and cd["status"] == "True"
                                              for cd in status["conditions"]):
                self._trace_done()
            self.posted = status
            self.agent.pod_status_posted(self)
        except NotFoundError:
            pass
        except ApiError as e:
            log.warning("pod %s: status update failed: %s", self.key, e)
