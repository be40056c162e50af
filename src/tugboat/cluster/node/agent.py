"""The node agent (our kubelet + kube-proxy + node-local DNS): ``tug cluster node``.

- registers its Node (capacity from /proc and cgroups, allocatable, addresses, conditions,
  nodeInfo, daemonEndpoints, ``spec.podCIDR``), renews a Lease in ``kube-node-lease`` every
  ``lease_renew`` seconds and posts node status every ``status_period`` seconds;
- watches the pods bound to it (``fieldSelector=spec.nodeName=NAME``) and runs one
  :class:`~tugboat.cluster.node.worker.PodWorker` per pod;
- owns the node's pod network: an engine bridge network with the node's pod subnet; routes to
  other nodes' pod subnets via their InternalIP;
- runs the service proxy (nftables, :mod:`tugboat.cluster.proxy.nftables`) and the cluster DNS
  (:mod:`tugboat.cluster.proxy.dns`, on the pod network's gateway, port 53);
- serves the kubelet API the API server proxies to (:mod:`tugboat.cluster.node.server`) and
  publishes metrics.k8s.io usage.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import platform
import socket
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from tugboat.cluster.client import EventRecorder, Informer
from tugboat.cluster.client import resources as R
from tugboat.cluster.client.rest import ApiClient, ApiError, ConflictError, NotFoundError, failure, retry
from tugboat.cluster.client.util import now as kube_now
from tugboat.cluster.client.util import now_micro
from tugboat.cluster.node.cri import LABEL_POD_UID, EngineRuntime
from tugboat.cluster.node.podnet import PodNetwork
from tugboat.cluster.node.satokens import TokenManager
from tugboat.cluster.node.worker import PodWorker
from tugboat.cluster.proxy.dns import ClusterDNS
from tugboat.cluster.proxy.model import ServiceModel
from tugboat.cluster.proxy.nftables import ServiceProxy
from tugboat.errors import Unavailable

log = logging.getLogger("tugboat.cluster.node")

VERSION = "v1.32.0-tugboat"


def machine_capacity() -> dict[str, str]:
    cpus = os.cpu_count() or 1
    with contextlib.suppress(OSError, ValueError), open("/sys/fs/cgroup/cpu/cpu.cfs_quota_us") as f:
        q = int(f.read())
        if q > 0:
            with open("/sys/fs/cgroup/cpu/cpu.cfs_period_us") as g:
                cpus = max(1, min(cpus, q // int(g.read())))
    mem = 0
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem = int(line.split()[1]) * 1024
    with contextlib.suppress(OSError, ValueError), open("/sys/fs/cgroup/memory/memory.limit_in_bytes") as f:
        lim = int(f.read())
        if 0 < lim < mem:
            mem = lim
    st = os.statvfs("/")
    return {"cpu": str(cpus), "memory": f"{mem // 1024}Ki", "pods": "110",
            "ephemeral-storage": f"{st.f_blocks * st.f_frsize // 1024}Ki"}


def allocatable_of(cap: dict[str, str]) -> dict[str, str]:
    mem_ki = int(cap["memory"][:-2])
    return {**cap, "memory": f"{max(0, mem_ki - 100 * 1024)}Ki"}


def default_node_ip() -> str:
    """The address of the interface holding the default route (no packet is sent)."""
    r = subprocess.run(["ip", "-4", "-o", "addr", "show", "scope", "global"], capture_output=True, text=True)
    for line in r.stdout.splitlines():
        parts = line.split()
        if "inet" in parts:
            return parts[parts.index("inet") + 1].split("/")[0]
    return "127.0.0.1"


class NodeAgent:
    def __init__(self, client: ApiClient, *, name: str, engine: Any, root: str, pod_cidr: str | None = None,
                 cluster_cidr: str = "10.244.0.0/16", node_ip: str | None = None, port: int = 10250,
                 listen_host: str = "0.0.0.0", domain: str = "cluster.local", dns: bool = True,
                 proxy: bool = True, lease_seconds: int = 40, lease_renew: float = 10.0,
                 status_period: float = 60.0, metrics_period: float = 15.0, offline: bool = True,
                 labels: dict[str, str] | None = None, bridge: str = "tugpods0",
                 kubelet_ssl: Any = None, start_slots: int = 8, startup_timeout: float = 300.0) -> None:
        self.client = client
        self.name = name
        self.engine = engine
        self.runtime = EngineRuntime(engine)
        self.root = root
        self.pod_cidr = pod_cidr
        self.cluster_cidr = cluster_cidr
        self.node_ip = node_ip or default_node_ip()
        self.port = port
        self.listen_host = listen_host
        self.kubelet_ssl = kubelet_ssl  # ssl.SSLContext: HTTPS + client certificates (node/server.py, node/tls.py)
        self.domain = domain
        self.want_dns = dns
        self.want_proxy = proxy
        self.lease_seconds = lease_seconds
        self.lease_renew = lease_renew
        self.status_period = status_period
        self.metrics_period = metrics_period
        self.offline = offline
        # start-up requests are retried (timeouts, connection errors, 5xx, 429) until this many
        # seconds have passed, as the kubelet keeps retrying registration: a busy API server must
        # not kill the agent
        self.startup_timeout = startup_timeout
        self.labels = labels or {}
        self.capacity = machine_capacity()
        self.allocatable = allocatable_of(self.capacity)
        self.bridge_name = bridge
        self.podnet: PodNetwork | None = None
        self.dns_ip: str | None = None
        self.gateway: str | None = None
        self.bridge: str | None = None
        self.workers: dict[str, PodWorker] = {}
        self.adoptable: set[str] | None = None  # pod uids with containers at start (None: not scanned yet)
        # pods being started at once (sandbox, network, container create + start; a pull gives the
        # slot back): the engine does these steps mostly one after another, so a burst of pods let
        # in all at once only interleaves them and all become Ready near the end; a few at a time,
        # in the order they came, each is Ready as soon as its own steps are done (bench/pods.py, 13
        # interleaved pairs of 30 pods: median p50 4.0 -> 2.8 s, p99 4.6 -> 4.6 s)
        self.pod_starts = asyncio.Semaphore(start_slots)
        self.executor = ThreadPoolExecutor(max_workers=32, thread_name_prefix="node")
        self.recorder = EventRecorder(client, "kubelet", host=name)
        self.sa_tokens = TokenManager(client)  # pods' projected service account tokens
        self.model = ServiceModel()
        self.dns_server: ClusterDNS | None = None
        self.proxy: ServiceProxy | None = None
        self.pods: Informer | None = None
        self.nodes: Informer | None = None
        self._tasks: list[asyncio.Task] = []
        self._unsub: Any = None
        self._routes: dict[str, str] = {}
        self.started_at = time.time()
        self.server: Any = None
        self.ready_at: float | None = None
        self.loop: asyncio.AbstractEventLoop | None = None

    # ---- node object
    def node_object(self) -> dict[str, Any]:
        t = kube_now()
        labels = {"kubernetes.io/hostname": self.name, "kubernetes.io/os": "linux",
                  "kubernetes.io/arch": "amd64", "beta.kubernetes.io/os": "linux",
                  "beta.kubernetes.io/arch": "amd64", **self.labels}
        spec: dict[str, Any] = {}
        if self.pod_cidr:
            spec = {"podCIDR": self.pod_cidr, "podCIDRs": [self.pod_cidr]}
        return {"apiVersion": "v1", "kind": "Node",
                "metadata": {"name": self.name, "labels": labels,
                             "annotations": {"tugboat.io/kubelet-scheme": "https" if self.kubelet_ssl else "http"}},
                "spec": spec, "status": self.node_status(t, t)}

    def node_status(self, heartbeat: str, transition: str) -> dict[str, Any]:
        conds = [("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
                 ("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
                 ("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
                 ("Ready", "True", "KubeletReady", "kubelet is posting ready status")]
        uname = platform.uname()
        machine_id = ""
        with contextlib.suppress(OSError), open("/etc/machine-id") as f:
            machine_id = f.read().strip()
        boot_id = ""
        with contextlib.suppress(OSError), open("/proc/sys/kernel/random/boot_id") as f:
            boot_id = f.read().strip()
        images = []
        with contextlib.suppress(Exception):
            for img in self.engine.images.list()[:50]:
                images.append({"names": list(img.repo_tags or []) + list(img.repo_digests or []),
                               "sizeBytes": int(img.size or 0)})
        return {
            "capacity": self.capacity, "allocatable": self.allocatable,
            "conditions": [{"type": a, "status": b, "reason": c, "message": d, "lastHeartbeatTime": heartbeat,
                            "lastTransitionTime": transition} for a, b, c, d in conds],
            "addresses": [{"type": "InternalIP", "address": self.node_ip}, {"type": "Hostname", "address": self.name}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": self.port}},
            "nodeInfo": {"architecture": "amd64", "operatingSystem": "linux", "kernelVersion": uname.release,
                         "osImage": _os_image(), "kubeletVersion": VERSION, "kubeProxyVersion": VERSION,
                         "containerRuntimeVersion": "tugboat://0.1", "machineID": machine_id,
                         "systemUUID": machine_id, "bootID": boot_id},
            "images": images,
        }

    async def register(self) -> None:
        obj = self.node_object()
        try:
            node = await self.client.create(R.NODES, obj)
        except ConflictError:
            node = await self.client.get(R.NODES, self.name)
        spec = node.get("spec") or {}
        if not self.pod_cidr:
            self.pod_cidr = spec.get("podCIDR") or self._derive_cidr()
        annotations = node["metadata"].get("annotations") or {}
        if spec.get("podCIDR") != self.pod_cidr or node["metadata"].get("labels", {}) != obj["metadata"]["labels"] \
                or any(annotations.get(k) != v for k, v in obj["metadata"]["annotations"].items()):
            with contextlib.suppress(ApiError):
                await self.client.patch(R.NODES, self.name, {
                    "metadata": {"labels": obj["metadata"]["labels"], "annotations": obj["metadata"]["annotations"]},
                    "spec": {"podCIDR": self.pod_cidr, "podCIDRs": [self.pod_cidr]}})
        await self.post_node_status()
        await self.renew_lease()

    def _derive_cidr(self) -> str:
        net = ipaddress.ip_network(self.cluster_cidr)
        subnets = list(net.subnets(new_prefix=24))
        idx = (sum(self.name.encode()) * 7919) % max(1, len(subnets) - 1) + 1
        return str(subnets[idx])

    async def post_node_status(self) -> None:
        node = await self.client.get(R.NODES, self.name)
        t = kube_now()
        old = {c["type"]: c for c in (node.get("status") or {}).get("conditions") or []}
        st = self.node_status(t, t)
        for c in st["conditions"]:
            o = old.get(c["type"])
            if o is not None and o.get("status") == c["status"]:
                c["lastTransitionTime"] = o.get("lastTransitionTime", t)
        await self.client.patch(R.NODES, self.name, {"status": st}, subresource="status")

    async def renew_lease(self) -> None:
        spec = {"holderIdentity": self.name, "leaseDurationSeconds": self.lease_seconds, "renewTime": now_micro()}
        try:
            lease = await self.client.get(R.LEASES, self.name, "kube-node-lease")
        except NotFoundError:
            body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                    "metadata": {"name": self.name, "namespace": "kube-node-lease"}, "spec": spec}
            with contextlib.suppress(ConflictError):
                await self.client.create(R.LEASES, body, "kube-node-lease")
            return
        lease["spec"] = {**(lease.get("spec") or {}), **spec}
        await self.client.update(R.LEASES, lease)

    async def _heartbeat(self) -> None:
        last_status = time.monotonic()
        while True:
            await asyncio.sleep(self.lease_renew)
            try:
                await self.renew_lease()
                if time.monotonic() - last_status >= self.status_period:
                    await self.post_node_status()
                    last_status = time.monotonic()
            except Exception as e:
                log.warning("heartbeat: %s", e)

    # ---- pod network
    def setup_network(self) -> None:
        assert self.pod_cidr
        self.podnet = PodNetwork(self.root, self.pod_cidr, self.cluster_cidr, bridge=self.bridge_name)
        self.podnet.setup()
        self.gateway = self.podnet.gateway
        self.dns_ip = self.gateway if self.want_dns else None
        self.bridge = self.bridge_name
        # traffic to service VIPs must never follow a default route out of this node
        r = subprocess.run(["ip", "route", "get", "10.96.0.1"], capture_output=True, text=True)
        if r.returncode != 0:
            subprocess.run(["ip", "route", "replace", "10.96.0.0/12", "dev", self.bridge], capture_output=True)

    def sync_routes(self) -> None:
        """Routes to other nodes' pod subnets through their InternalIP."""
        if self.nodes is None:
            return
        want: dict[str, str] = {}
        for n in self.nodes.list():
            if n["metadata"]["name"] == self.name:
                continue
            cidr = (n.get("spec") or {}).get("podCIDR")
            ip = next((a["address"] for a in (n.get("status") or {}).get("addresses") or []
                       if a.get("type") == "InternalIP"), None)
            if cidr and ip and ip != self.node_ip:
                want[cidr] = ip
        for cidr, ip in want.items():
            if self._routes.get(cidr) != ip:
                r = subprocess.run(["ip", "route", "replace", cidr, "via", ip], capture_output=True, text=True)
                if r.returncode == 0:
                    self._routes[cidr] = ip
                else:
                    log.warning("route %s via %s: %s", cidr, ip, r.stderr.strip())
        for cidr in list(self._routes):
            if cidr not in want:
                subprocess.run(["ip", "route", "del", cidr], capture_output=True)
                del self._routes[cidr]

    # ---- references a pod needs
    async def fetch_refs(self, pod: dict[str, Any]) -> tuple[dict, dict, dict]:
        from tugboat.cluster.node.podspec import referenced_objects

        ns = pod["metadata"]["namespace"]
        cm_names, secret_names = referenced_objects(pod.get("spec") or {})

        async def get(res: R.Resource, name: str) -> dict | None:
            try:
                return await self.client.get(res, name, ns)
            except NotFoundError:
                return None

        cms = {n: await get(R.CONFIGMAPS, n) for n in cm_names}
        secrets = {n: await get(R.SECRETS, n) for n in secret_names}
        pv_paths: dict[str, str] = {}
        for v in (pod.get("spec") or {}).get("volumes") or []:
            if "persistentVolumeClaim" not in v:
                continue
            claim = v["persistentVolumeClaim"]["claimName"]
            pvc = await get(R.PVCS, claim)
            if pvc is None:
                from tugboat.cluster.node.podspec import ConfigError

                raise ConfigError(f'persistentvolumeclaim "{claim}" not found')
            pv_name = (pvc.get("spec") or {}).get("volumeName")
            if not pv_name:
                continue
            try:
                pv = await self.client.get(R.PVS, pv_name)
            except NotFoundError:
                continue
            pspec = pv.get("spec") or {}
            path = (pspec.get("local") or {}).get("path") or (pspec.get("hostPath") or {}).get("path")
            if path:
                pv_paths[claim] = path
        return cms, secrets, pv_paths

    async def pull_auth(self, pod: dict[str, Any], image: str) -> dict | None:
        import base64
        import json

        from tugboat.oci.reference import parse_reference

        try:
            domain = parse_reference(image).domain
        except Exception:
            return None
        for ref in (pod.get("spec") or {}).get("imagePullSecrets") or []:
            try:
                s = await self.client.get(R.SECRETS, ref["name"], pod["metadata"]["namespace"])
            except NotFoundError:
                continue
            raw = (s.get("data") or {}).get(".dockerconfigjson")
            if not raw:
                continue
            auths = json.loads(base64.b64decode(raw)).get("auths") or {}
            for host, a in auths.items():
                h = host.replace("https://", "").replace("http://", "").split("/")[0]
                if h == domain or (domain == "docker.io" and "docker.io" in h):
                    if a.get("auth"):
                        user, _, pw = base64.b64decode(a["auth"]).decode().partition(":")
                        return {"username": user, "password": pw}
                    return {"username": a.get("username"), "password": a.get("password")}
        return None

    def service_env(self, pod: dict[str, Any]) -> dict[str, str]:
        """Docker-links style variables of the services in the pod's namespace (as the kubelet sets)."""
        out: dict[str, str] = {}
        ns = pod["metadata"]["namespace"]
        for s in self.model.services():
            if s.namespace not in (ns,) or not s.cluster_ip or not s.ports:
                continue
            n = s.name.upper().replace("-", "_")
            p0 = s.ports[0]
            out[f"{n}_SERVICE_HOST"] = s.cluster_ip
            out[f"{n}_SERVICE_PORT"] = str(p0.port)
            for p in s.ports:
                if p.name:
                    out[f"{n}_SERVICE_PORT_{p.name.upper().replace('-', '_')}"] = str(p.port)
                proto = p.protocol.lower()
                out[f"{n}_PORT_{p.port}_{p.protocol}"] = f"{proto}://{s.cluster_ip}:{p.port}"
                out[f"{n}_PORT_{p.port}_{p.protocol}_PROTO"] = proto
                out[f"{n}_PORT_{p.port}_{p.protocol}_PORT"] = str(p.port)
                out[f"{n}_PORT_{p.port}_{p.protocol}_ADDR"] = s.cluster_ip
            out[f"{n}_PORT"] = f"{p0.protocol.lower()}://{s.cluster_ip}:{p0.port}"
        if ns == "default" or "KUBERNETES_SERVICE_HOST" not in out:
            k = self.model.service("default", "kubernetes")
            if k and k.cluster_ip:
                out.setdefault("KUBERNETES_SERVICE_HOST", k.cluster_ip)
                out.setdefault("KUBERNETES_SERVICE_PORT", str(k.ports[0].port if k.ports else 443))
        return out

    # ---- pods
    def _on_pod(self, pod: dict[str, Any], *_: Any) -> None:
        if _:
            pod = _[0]
        uid = pod["metadata"].get("uid")
        if not uid:
            return
        w = self.workers.get(uid)
        if w is None:
            if (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed") and \
                    not pod["metadata"].get("deletionTimestamp"):
                return
            w = PodWorker(self, uid, pod)
            self.workers[uid] = w
            w.start()
        else:
            w.update(pod)

    def _on_pod_delete(self, pod: dict[str, Any]) -> None:
        w = self.workers.get(pod["metadata"].get("uid", ""))
        if w is not None:
            md = dict(pod["metadata"])
            md.setdefault("deletionTimestamp", kube_now())
            md["deletionGracePeriodSeconds"] = 0
            w.update({**pod, "metadata": md})

    def worker_gone(self, worker: PodWorker) -> None:
        self.workers.pop(worker.uid, None)

    def pod_status_posted(self, worker: PodWorker) -> None:
        pass

    def _on_engine_event(self, ev: dict[str, Any]) -> None:
        if ev.get("Type") != "container" or ev.get("Action") not in ("die", "oom", "start"):
            return
        uid = ((ev.get("Actor") or {}).get("Attributes") or {}).get(LABEL_POD_UID)
        if uid and self.loop is not None:
            w = self.workers.get(uid)
            if w is not None:
                self.loop.call_soon_threadsafe(w.wake.set)

    async def remove_orphans(self) -> None:
        """Containers of pods this node no longer has (e.g. deleted while the agent was down)."""
        assert self.pods is not None
        known = {p["metadata"].get("uid") for p in self.pods.list()}

        def sweep() -> None:
            from tugboat.cluster.node.volumes import cleanup_pod_dir

            for c in self.runtime.list_pod_containers():
                uid = c["labels"].get(LABEL_POD_UID)
                if uid not in known:
                    self.runtime.remove_container(c["id"])
                    cleanup_pod_dir(self.root, uid)
                    if self.podnet is not None:
                        self.podnet.detach(uid)
            if self.podnet is not None:
                self.podnet.retain_only({u for u in known if u})

        await asyncio.get_running_loop().run_in_executor(self.executor, sweep)

    # ---- metrics
    async def publish_metrics(self) -> None:
        from tugboat.cluster.node.metrics import collect

        pods, node = await asyncio.get_running_loop().run_in_executor(self.executor, collect, self)
        for pm in pods:
            md = pm["metadata"]
            with contextlib.suppress(ApiError):
                await self.client.request("PUT", R.POD_METRICS.path(md["namespace"], md["name"]), body=pm)
        with contextlib.suppress(ApiError):
            await self.client.request("PUT", R.NODE_METRICS.path(None, self.name), body=node)

    async def _metrics_loop(self) -> None:
        while True:
            await asyncio.sleep(self.metrics_period)
            try:
                await self.publish_metrics()
            except Exception as e:
                log.debug("metrics: %s", e)

    # ---- life cycle
    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        # the kubelet API first: the Node object advertises its port
        from tugboat.cluster.node.server import start_server

        self.server = await start_server(self, self.listen_host, self.port)
        deadline = time.monotonic() + self.startup_timeout
        await retry("registering the node", self.register, deadline=deadline)
        await self.loop.run_in_executor(self.executor, self.setup_network)
        await self.loop.run_in_executor(self.executor, self.runtime.ensure_pause_image)
        # services -> proxy + DNS
        svcs = Informer(self.client, R.SERVICES)
        slices = Informer(self.client, R.ENDPOINTSLICES)
        self.model.attach(svcs, slices)
        self._informers = [svcs, slices]
        if self.want_proxy:
            self.proxy = ServiceProxy(self.model, cluster_cidr=self.cluster_cidr)
            self._tasks.append(self.loop.create_task(self.proxy.run()))
        if self.want_dns and self.gateway:
            self.dns_server = ClusterDNS(self.model, domain=self.domain)
            try:
                await self.dns_server.start(self.gateway, 53)
            except OSError as e:
                log.warning("cluster DNS on %s:53: %s", self.gateway, e)
                self.dns_server = None
                self.dns_ip = None
        # other nodes -> routes
        self.nodes = Informer(self.client, R.NODES)
        self.nodes.add_handler(lambda *_: self.executor.submit(self.sync_routes),
                               lambda *_: self.executor.submit(self.sync_routes),
                               lambda *_: self.executor.submit(self.sync_routes))
        self._informers.append(self.nodes)
        for inf in self._informers:
            inf.start()
        await self._wait_synced(self._informers, deadline)
        self._unsub = self.engine.events.subscribe(self._on_engine_event)
        # pods that may have containers to adopt (a restarted agent): one scan, not one per pod
        self.adoptable = await self.loop.run_in_executor(self.executor, lambda: {
            c["labels"].get(LABEL_POD_UID) for c in self.runtime.list_pod_containers()})
        self.pods = Informer(self.client, R.PODS, field_selector=f"spec.nodeName={self.name}")
        self.pods.add_handler(self._on_pod, self._on_pod, self._on_pod_delete)
        self.pods.start()
        await self._wait_synced([self.pods], deadline)
        await self.remove_orphans()
        self._tasks.append(self.loop.create_task(self._heartbeat()))
        self._tasks.append(self.loop.create_task(self._metrics_loop()))
        self.ready_at = time.time()
        log.info("node %s ready: pod CIDR %s, node IP %s, kubelet port %s", self.name, self.pod_cidr,
                 self.node_ip, self.port)

    async def _wait_synced(self, informers: list[Informer], deadline: float) -> None:
        """Wait for the informers' first lists (they retry on their own) until the start-up deadline."""
        try:
            await asyncio.wait_for(asyncio.gather(*(i.synced.wait() for i in informers)),
                                   max(0.0, deadline - time.monotonic()))
        except TimeoutError:
            late = [i for i in informers if not i.synced.is_set()]
            why = "; ".join(f"{i.resource.plural}: " + (failure(i.last_error) if getattr(i, "last_error", None)
                                                        else "no answer yet") for i in late)
            raise Unavailable(f"the first list of {', '.join(i.resource.plural for i in late)} did not come "
                              f"within the start-up deadline ({self.startup_timeout:.0f}s): {why}") from None

    async def stop(self, remove_pods: bool = False) -> None:
        for t in self._tasks:
            t.cancel()
        if self.pods is not None:
            await self.pods.stop()
        for inf in getattr(self, "_informers", []):
            await inf.stop()
        for w in list(self.workers.values()):
            if w.task:
                w.task.cancel()
        if remove_pods:
            for w in list(self.workers.values()):
                with contextlib.suppress(Exception):
                    await w.cleanup()
        if self._unsub:
            self._unsub()
        if self.dns_server is not None:
            await self.dns_server.stop()
        if self.proxy is not None:
            self.proxy.cleanup()
        if self.server is not None:
            await self.server.cleanup()
        for cidr in list(self._routes):
            subprocess.run(["ip", "route", "del", cidr], capture_output=True)
        if remove_pods and self.podnet is not None:
            self.podnet.teardown()
        with contextlib.suppress(Exception):
            await self.recorder.flush(2)
        self.executor.shutdown(wait=False, cancel_futures=True)

    async def run(self) -> None:
        await self.start()
        try:
            await asyncio.Event().wait()
        finally:
            await self.stop()


def _os_image() -> str:
    with contextlib.suppress(OSError), open("/etc/os-release") as f:
        for line in f:
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip().strip('"')
    return "Linux"


def hostname() -> str:
    return socket.gethostname().lower()
