"""Simulated nodes (kwok-like): register N nodes, keep their heartbeats (a Lease in
``kube-node-lease`` plus the Ready condition), and play the kubelet for pods bound to them.

Pod behaviour can be steered with annotations:
  ``sim.tugboat.io/complete-after: "2s"``  the pod ends Succeeded after that long (Jobs);
  ``sim.tugboat.io/fail-after: "2s"``      the pod ends Failed;
  ``sim.tugboat.io/not-ready: "true"``     Running but never Ready;
  ``sim.tugboat.io/cpu: "250m"`` / ``sim.tugboat.io/memory: "64Mi"``  reported usage per container.
Synthetic usage can also be set at runtime with :meth:`SimNodes.set_usage` (HPA tests).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
from typing import Any

from tugboat.cluster.client import resources as R
from tugboat.cluster.client.informer import Informer
from tugboat.cluster.client.rest import ApiClient, ApiError, ConflictError, NotFoundError
from tugboat.cluster.client.util import now, now_micro, quantity
from tugboat.cluster.client.workqueue import WorkQueue, run_worker

log = logging.getLogger(__name__)

ANN = "sim.tugboat.io/"


def _duration(s: str) -> float:
    s = s.strip()
    for suf, mul in (("ms", 0.001), ("s", 1.0), ("m", 60.0)):
        if s.endswith(suf):
            return float(s[: -len(suf)]) * mul
    return float(s)


class SimNodes:
    def __init__(
        self,
        client: ApiClient,
        count: int,
        *,
        prefix: str = "sim-node-",
        cpu: str = "32",
        memory: str = "256Gi",
        max_pods: int = 110,
        zones: int = 3,
        labels: dict[str, str] | None = None,
        taints: list[dict] | None = None,
        heartbeat_seconds: float = 10.0,
        status_seconds: float = 60.0,
        lease_seconds: int = 40,
        workers: int = 32,
        pod_cidr: str = "10.244.0.0/16",
        metrics: bool = True,
        metrics_seconds: float = 5.0,
    ) -> None:
        self.client = client
        self.count = count
        self.prefix = prefix
        self.cpu, self.memory, self.max_pods = cpu, memory, max_pods
        self.zones = zones
        self.labels = labels or {}
        self.taints = taints or []
        self.heartbeat_seconds = heartbeat_seconds
        self.status_seconds = status_seconds
        self.lease_seconds = lease_seconds
        self.workers = workers
        self.names = [f"{prefix}{i}" for i in range(count)]
        self._mine = set(self.names)
        self.stopped: set[str] = set()  # nodes whose heartbeats are paused (tests: node failure)
        self.pods = Informer(client, R.PODS)
        self.queue = WorkQueue(name="simnodes")
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._ips: dict[str, str] = {}
        self._net = ipaddress.ip_network(pod_cidr)
        self._next_ip = 2
        self.usage: dict[str, tuple[str, str]] = {}  # pod key -> (cpu, memory) per container
        self.metrics = metrics
        self.metrics_seconds = metrics_seconds
        self.running_at: dict[str, float] = {}
        self._published: dict[tuple, tuple[str, float]] = {}
        self.agent_port = 0
        self._agent: Any = None
        self._tasks: list[asyncio.Task] = []

    # ---- nodes
    def node_object(self, i: int, name: str) -> dict:
        t = now()
        labels = {
            "kubernetes.io/hostname": name,
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": "amd64",
            "topology.kubernetes.io/zone": f"zone-{i % self.zones}",
            "type": "sim",
            **self.labels,
        }
        res = {"cpu": self.cpu, "memory": self.memory, "pods": str(self.max_pods), "ephemeral-storage": "100Gi"}
        return {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": name, "labels": labels, "annotations": {"sim.tugboat.io/simulated": "true"}},
            "spec": {"taints": list(self.taints)} if self.taints else {},
            "status": {
                "capacity": res,
                "allocatable": res,
                "phase": "Running",
                "conditions": self._conditions(t, t),
                # the node "agent" of every simulated node is this process, on loopback
                "addresses": [{"type": "InternalIP", "address": "127.0.0.1"},
                              {"type": "Hostname", "address": name}],
                "daemonEndpoints": {"kubeletEndpoint": {"Port": self.agent_port}},
                "nodeInfo": {"architecture": "amd64", "operatingSystem": "linux", "kubeletVersion": "v1.32.0-tugboat-sim",
                             "kubeProxyVersion": "v1.32.0-tugboat-sim", "containerRuntimeVersion": "sim://1.0",
                             "kernelVersion": "6.1.0", "osImage": "tugboat simulated node", "machineID": "", "systemUUID": "",
                             "bootID": ""},
                "images": [],
            },
        }

    @staticmethod
    def _conditions(heartbeat: str, transition: str) -> list[dict]:
        conds = [("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
                 ("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
                 ("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
                 ("Ready", "True", "KubeletReady", "kubelet is posting ready status")]
        return [{"type": t, "status": s, "reason": r, "message": m, "lastHeartbeatTime": heartbeat,
                 "lastTransitionTime": transition} for t, s, r, m in conds]

    async def register(self) -> None:
        sem = asyncio.Semaphore(32)

        async def one(i: int, name: str) -> None:
            async with sem:
                obj = self.node_object(i, name)
                try:
                    created = await self.client.create(R.NODES, obj)
                except ConflictError:
                    created = await self.client.get(R.NODES, name)
                if (created.get("status") or {}).get("allocatable") != obj["status"]["allocatable"] or not (
                        created.get("status") or {}).get("conditions"):
                    # servers that drop status on create (or an existing node): post it
                    created["status"] = obj["status"]
                    try:
                        await self.client.update_status(R.NODES, created)
                    except ApiError as exc:
                        log.debug("node %s status: %s", name, exc)
                await self._renew_lease(name)

        await asyncio.gather(*(one(i, n) for i, n in enumerate(self.names)))

    async def _renew_lease(self, name: str) -> None:
        spec = {"holderIdentity": name, "leaseDurationSeconds": self.lease_seconds, "renewTime": now_micro()}
        try:
            lease = await self.client.get(R.LEASES, name, "kube-node-lease")
        except NotFoundError:
            body = {"metadata": {"name": name, "namespace": "kube-node-lease",
                                 "ownerReferences": []}, "spec": spec}
            try:
                await self.client.create(R.LEASES, body, "kube-node-lease")
            except ConflictError:
                pass
            return
        lease["spec"] = {**(lease.get("spec") or {}), **spec}
        await self.client.update(R.LEASES, lease)

    async def _post_status(self, name: str) -> None:
        node = await self.client.get(R.NODES, name)
        t = now()
        st = node.setdefault("status", {})
        old = {c["type"]: c for c in st.get("conditions") or []}
        conds = self._conditions(t, t)
        for c in conds:
            o = old.get(c["type"])
            if o is not None and o.get("status") == c["status"]:
                c["lastTransitionTime"] = o.get("lastTransitionTime", t)
        st["conditions"] = conds
        await self.client.update_status(R.NODES, node)

    async def _heartbeat_loop(self) -> None:
        loop = asyncio.get_running_loop()
        last_status: dict[str, float] = {}
        sem = asyncio.Semaphore(16)
        while True:
            start = loop.time()

            async def beat(name: str) -> None:
                async with sem:
                    try:
                        await self._renew_lease(name)
                        if loop.time() - last_status.get(name, 0) >= self.status_seconds or self._needs_ready(name):
                            await self._post_status(name)
                            last_status[name] = loop.time()
                    except Exception as exc:
                        log.debug("heartbeat %s: %s", name, exc)

            await asyncio.gather(*(beat(n) for n in self.names if n not in self.stopped))
            await asyncio.sleep(max(0.05, self.heartbeat_seconds - (loop.time() - start)))

    def _needs_ready(self, name: str) -> bool:
        node = self._nodes_seen.get(name) if hasattr(self, "_nodes_seen") else None
        if node is None:
            return False
        for c in (node.get("status") or {}).get("conditions") or []:
            if c.get("type") == "Ready" and c.get("status") != "True":
                return True
        return False

    def stop_node(self, name: str) -> None:
        """Simulate a node failure: heartbeats stop and its pods are no longer updated."""
        self.stopped.add(name)

    def resume_node(self, name: str) -> None:
        self.stopped.discard(name)
        # catch up with what happened meanwhile (e.g. pods deleted while the node was away)
        for pod in list(self.pods.store.values()):
            if (pod.get("spec") or {}).get("nodeName") == name:
                self.queue.add(f"{pod['metadata']['namespace']}/{pod['metadata']['name']}")

    # ---- pods
    def _on_pod(self, pod: dict, *_: Any) -> None:
        pod = _[-1] if _ else pod
        node = (pod.get("spec") or {}).get("nodeName")
        if node in self._mine and node not in self.stopped:
            self.queue.add(f"{pod['metadata']['namespace']}/{pod['metadata']['name']}")

    def _on_pod_delete(self, pod: dict) -> None:
        key = f"{pod['metadata']['namespace']}/{pod['metadata']['name']}"
        self.usage.pop(key, None)
        self._published.pop(("pods", pod["metadata"]["namespace"], pod["metadata"]["name"]), None)
        self.running_at.pop(key, None)
        t = self._timers.pop(key, None)
        if t:
            t.cancel()
        ip = self._ips.pop(key, None)
        _ = ip

    def _ip_for(self, key: str) -> str:
        ip = self._ips.get(key)
        if ip is None:
            ip = str(self._net.network_address + self._next_ip)
            self._next_ip += 1
            if self._next_ip >= self._net.num_addresses - 1:
                self._next_ip = 2
            self._ips[key] = ip
        return ip

    async def _sync_pod(self, key: str) -> None:
        pod = self.pods.get(key)
        if pod is None:
            return
        md, spec = pod["metadata"], pod.get("spec") or {}
        node = spec.get("nodeName")
        if node not in self._mine or node in self.stopped:
            return
        if md.get("deletionTimestamp"):
            try:
                await self.client.delete(R.PODS, md["name"], md["namespace"], grace_period=0,
                                         preconditions={"uid": md["uid"]})
            except (NotFoundError, ConflictError):
                pass
            return
        st = pod.get("status") or {}
        phase = st.get("phase")
        if phase in ("Succeeded", "Failed"):
            return
        ann = md.get("annotations") or {}
        if phase == "Running":
            self._schedule_end(key, pod, ann)
            return
        t = now()
        ready = "False" if ann.get(ANN + "not-ready") == "true" else "True"
        node_obj = self._nodes_seen.get(node, {}) if hasattr(self, "_nodes_seen") else {}
        host_ip = next((a["address"] for a in (node_obj.get("status") or {}).get("addresses") or []
                        if a.get("type") == "InternalIP"), "127.0.0.1")
        ip = self._ip_for(key)
        status = {
            "phase": "Running",
            "conditions": [
                {"type": "PodReadyToStartContainers", "status": "True", "lastProbeTime": None, "lastTransitionTime": t},
                {"type": "Initialized", "status": "True", "lastProbeTime": None, "lastTransitionTime": t},
                {"type": "Ready", "status": ready, "lastProbeTime": None, "lastTransitionTime": t},
                {"type": "ContainersReady", "status": ready, "lastProbeTime": None, "lastTransitionTime": t},
                {"type": "PodScheduled", "status": "True", "lastProbeTime": None, "lastTransitionTime": t},
            ],
            "hostIP": host_ip,
            "hostIPs": [{"ip": host_ip}],
            "podIP": ip,
            "podIPs": [{"ip": ip}],
            "startTime": t,
            "qosClass": _qos(spec),
            "containerStatuses": [
                {"name": c["name"], "image": c.get("image", ""), "imageID": "sim://" + c.get("image", ""),
                 "containerID": f"sim://{md.get('uid', '')[:8]}-{c['name']}", "ready": ready == "True",
                 "started": True, "restartCount": 0, "state": {"running": {"startedAt": t}}}
                for c in spec.get("containers") or []
            ],
        }
        pod = dict(pod)
        pod["status"] = status
        try:
            await self.client.update_status(R.PODS, pod)
        except NotFoundError:
            return
        self.running_at[key] = time.time()
        self._schedule_end(key, pod, ann)

    def _schedule_end(self, key: str, pod: dict, ann: dict) -> None:
        for which, phase in (("complete-after", "Succeeded"), ("fail-after", "Failed")):
            if ANN + which in ann and key not in self._timers:
                delay = _duration(ann[ANN + which])
                loop = asyncio.get_running_loop()
                self._timers[key] = loop.call_later(
                    delay, lambda k=key, ph=phase: self._spawn(self._finish(k, ph)))

    def _spawn(self, coro: Any) -> None:
        t = asyncio.ensure_future(coro)
        self._tasks.append(t)
        t.add_done_callback(lambda x: self._tasks.remove(x) if x in self._tasks else None)

    async def _finish(self, key: str, phase: str) -> None:
        self._timers.pop(key, None)
        pod = self.pods.get(key)
        if pod is None or (pod.get("spec") or {}).get("nodeName") in self.stopped:
            return
        pod = dict(pod)
        st = dict(pod.get("status") or {})
        t = now()
        code = 0 if phase == "Succeeded" else 1
        st["phase"] = phase
        st["conditions"] = [
            {**c, "status": "False", "lastTransitionTime": t} if c.get("type") in ("Ready", "ContainersReady") else c
            for c in st.get("conditions") or []
        ]
        st["containerStatuses"] = [
            {**cs, "ready": False, "started": False,
             "state": {"terminated": {"exitCode": code, "reason": "Completed" if code == 0 else "Error",
                                      "startedAt": (cs.get("state") or {}).get("running", {}).get("startedAt", t),
                                      "finishedAt": t, "containerID": cs.get("containerID")}}}
            for cs in st.get("containerStatuses") or []
        ]
        pod["status"] = st
        try:
            await self.client.update_status(R.PODS, pod)
        except ApiError as exc:
            log.debug("finish %s: %s", key, exc)
            if isinstance(exc, ConflictError):
                self._timers[key] = asyncio.get_running_loop().call_later(
                    0.2, lambda: self._spawn(self._finish(key, phase)))

    # ---- metrics
    def set_usage(self, key: str, cpu: str, memory: str = "32Mi") -> None:
        """Synthetic usage per container of pod ``namespace/name``."""
        self.usage[key] = (cpu, memory)

    def pod_usage(self, pod: dict) -> tuple[str, str]:
        key = f"{pod['metadata']['namespace']}/{pod['metadata']['name']}"
        if key in self.usage:
            return self.usage[key]
        ann = pod["metadata"].get("annotations") or {}
        return ann.get(ANN + "cpu", "10m"), ann.get(ANN + "memory", "32Mi")

    def pod_metrics(self) -> list[dict]:
        """PodMetrics for every running pod on these nodes (the metrics.k8s.io shape)."""
        out = []
        ts = now()
        for pod in self.pods.store.values():
            if (pod.get("spec") or {}).get("nodeName") not in self._mine or (pod.get("status") or {}).get("phase") != "Running":
                continue
            cpu, mem = self.pod_usage(pod)
            out.append({
                "apiVersion": "metrics.k8s.io/v1beta1", "kind": "PodMetrics",
                "metadata": {"name": pod["metadata"]["name"], "namespace": pod["metadata"]["namespace"],
                             "labels": pod["metadata"].get("labels") or {}},
                "timestamp": ts, "window": "30s",
                "containers": [{"name": c["name"], "usage": {"cpu": _nano(cpu), "memory": _ki(mem)}}
                               for c in (pod.get("spec") or {}).get("containers") or []],
            })
        return out

    def node_metrics(self) -> list[dict]:
        per: dict[str, list[int]] = {n: [0, 0] for n in self.names}
        for pm in self.pod_metrics():
            pod = self.pods.get(f"{pm['metadata']['namespace']}/{pm['metadata']['name']}")
            n = (pod or {}).get("spec", {}).get("nodeName")
            if n in per:
                for c in pm["containers"]:
                    per[n][0] += int(quantity(c["usage"]["cpu"]) * 10**9)
                    per[n][1] += int(quantity(c["usage"]["memory"]))
        ts = now()
        return [{"apiVersion": "metrics.k8s.io/v1beta1", "kind": "NodeMetrics", "metadata": {"name": n},
                 "timestamp": ts, "window": "30s",
                 "usage": {"cpu": f"{v[0]}n", "memory": f"{v[1] // 1024}Ki"}} for n, v in per.items()]

    async def publish_metrics(self) -> None:
        """Write PodMetrics/NodeMetrics through the API (PUT creates or replaces)."""
        sem = asyncio.Semaphore(16)

        async def put(res: R.Resource, obj: dict) -> None:
            async with sem:
                md = obj["metadata"]
                try:
                    await self.client.request("PUT", res.path(md.get("namespace"), md["name"]), body=obj)
                except ApiError as exc:
                    log.debug("metrics %s: %s", md["name"], exc)

        # only what changed, or what was last sent a while ago (the server keeps metrics for minutes):
        # a thousand idle pods must not cost a thousand writes every few seconds
        t = time.monotonic()
        todo = []
        for res, items in ((R.POD_METRICS, self.pod_metrics()), (R.NODE_METRICS, self.node_metrics())):
            for m in items:
                md = m["metadata"]
                if res is R.NODE_METRICS and md["name"] in self.stopped:
                    continue
                k = (res.plural, md.get("namespace"), md["name"])
                sig = repr(m.get("containers") or m.get("usage"))
                last = self._published.get(k)
                if last is None or last[0] != sig or t - last[1] > 60:
                    self._published[k] = (sig, t)
                    todo.append(put(res, m))
        await asyncio.gather(*todo)

    async def _metrics_loop(self) -> None:
        while True:
            await asyncio.sleep(self.metrics_seconds)
            try:
                await self.publish_metrics()
            except Exception as exc:
                log.debug("metrics: %s", exc)

    # ---- a minimal node-agent endpoint: synthetic container logs (kubectl logs via the API server)
    async def _start_agent(self) -> None:
        from aiohttp import web

        async def logs(request: web.Request) -> web.StreamResponse:
            ns, pod, ctr = request.match_info["ns"], request.match_info["pod"], request.match_info["ctr"]
            obj = self.pods.get(f"{ns}/{pod}")
            if obj is None:
                return web.Response(status=404, text=f"pod {ns}/{pod} not found on this node")
            started = self.running_at.get(f"{ns}/{pod}", time.time())
            lines = [f"simulated container {ctr} of pod {ns}/{pod} started",
                     f"image {next((c.get('image') for c in obj['spec'].get('containers') or [] if c['name'] == ctr), '?')}"]
            ts = request.query.get("timestamps") in ("true", "1")

            def fmt(line: str, t: float) -> str:
                import datetime as _dt

                stamp = _dt.datetime.fromtimestamp(t, _dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f000Z")
                return (stamp + " " + line if ts else line) + "\n"

            if request.query.get("follow") not in ("true", "1"):
                return web.Response(text="".join(fmt(x, started) for x in lines), content_type="text/plain")
            resp = web.StreamResponse(headers={"Content-Type": "text/plain"})
            await resp.prepare(request)
            for x in lines:
                await resp.write(fmt(x, started).encode())
            n = 0
            while self.pods.get(f"{ns}/{pod}") is not None:
                await asyncio.sleep(1.0)
                n += 1
                await resp.write(fmt(f"tick {n}", time.time()).encode())
            return resp

        app = web.Application()
        app.router.add_get("/containerLogs/{ns}/{pod}/{ctr}", logs)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", self.agent_port)
        await site.start()
        self._agent = runner
        self.agent_port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    # ---- running
    async def start(self) -> None:
        self._nodes_seen: dict[str, dict] = {}
        await self._start_agent()
        self.nodes = Informer(self.client, R.NODES, label_selector="type=sim")
        self.nodes.add_handler(lambda o: self._nodes_seen.__setitem__(o["metadata"]["name"], o),
                               lambda a, b: self._nodes_seen.__setitem__(b["metadata"]["name"], b))
        await self.register()
        self.nodes.start()
        self.pods.add_handler(self._on_pod, self._on_pod, self._on_pod_delete)
        self.pods.start()
        await self.pods.wait_synced(120)
        self._tasks.append(asyncio.ensure_future(self._heartbeat_loop()))
        for _ in range(self.workers):
            self._tasks.append(asyncio.ensure_future(run_worker(self.queue, self._sync_pod)))
        if self.metrics:
            self._tasks.append(asyncio.ensure_future(self._metrics_loop()))

    async def stop(self) -> None:
        self.queue.shutdown()
        for t in self._timers.values():
            t.cancel()
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.pods.stop()
        if hasattr(self, "nodes"):
            await self.nodes.stop()
        if self._agent is not None:
            await self._agent.cleanup()
            self._agent = None

    async def run(self) -> None:
        await self.start()
        try:
            await asyncio.Event().wait()
        finally:
            await self.stop()


def _qos(spec: dict) -> str:
    cs = spec.get("containers") or []
    if not any((c.get("resources") or {}).get("requests") or (c.get("resources") or {}).get("limits") for c in cs):
        return "BestEffort"
    for c in cs:
        r = c.get("resources") or {}
        lim, req = r.get("limits") or {}, r.get("requests") or {}
        if not lim.get("cpu") or not lim.get("memory") or any(req.get(k, lim[k]) != lim[k] for k in ("cpu", "memory")):
            return "Burstable"
    return "Guaranteed"


def _nano(q: str) -> str:
    return f"{int(quantity(q) * 10**9)}n"


def _ki(q: str) -> str:
    return f"{int(quantity(q)) // 1024}Ki"
