"""The scheduler's view of the cluster: per-node allocatable and requested resources, host ports,
pods (including pods assumed bound before the API server confirms), and label/topology indexes."""

from __future__ import annotations

import collections
from dataclasses import dataclass, field
from typing import Any

from tugboat.cluster.client.util import milli, whole

DEFAULT_MILLI_CPU = 100  # kube's defaults for scoring pods without requests
DEFAULT_MEMORY = 200 * 1024 * 1024


@dataclass(slots=True)
class Resources:
    cpu: int = 0  # millicores
    mem: int = 0  # bytes
    pods: int = 0
    other: dict[str, int] = field(default_factory=dict)

    def add(self, r: Resources, sign: int = 1) -> None:
        self.cpu += sign * r.cpu
        self.mem += sign * r.mem
        self.pods += sign * r.pods
        for k, v in r.other.items():
            self.other[k] = self.other.get(k, 0) + sign * v


def _parse_resources(d: dict | None) -> Resources:
    r = Resources()
    for k, v in (d or {}).items():
        if k == "cpu":
            r.cpu = milli(v)
        elif k == "memory":
            r.mem = whole(v)
        elif k == "pods":
            r.pods = whole(v)
        else:
            r.other[k] = whole(v)
    return r


def pod_requests(pod: dict) -> Resources:
    """Sum of container requests, at least the largest init container's, plus overhead."""
    spec = pod.get("spec") or {}
    total = Resources(pods=1)
    for c in spec.get("containers") or []:
        total.add(_parse_resources((c.get("resources") or {}).get("requests")))
    for c in spec.get("initContainers") or []:
        r = _parse_resources((c.get("resources") or {}).get("requests"))
        total.cpu = max(total.cpu, r.cpu)
        total.mem = max(total.mem, r.mem)
        for k, v in r.other.items():
            total.other[k] = max(total.other.get(k, 0), v)
    if spec.get("overhead"):
        total.add(_parse_resources(spec["overhead"]))
    total.pods = 1
    return total


def host_ports(pod: dict) -> list[tuple[str, str, int]]:
    out = []
    for c in (pod.get("spec") or {}).get("containers") or []:
        for p in c.get("ports") or []:
            if p.get("hostPort"):
                out.append((p.get("hostIP") or "0.0.0.0", p.get("protocol") or "TCP", int(p["hostPort"])))
    return out


@dataclass(slots=True)
class PodInfo:
    key: str
    namespace: str
    name: str
    uid: str
    labels: dict[str, str]
    node: str
    priority: int
    req: Resources
    ports: list[tuple[str, str, int]]
    anti_terms: list[dict]  # required anti-affinity terms of this (assigned) pod
    pod: dict


def pod_priority(pod: dict) -> int:
    return int((pod.get("spec") or {}).get("priority") or 0)


def make_podinfo(pod: dict, node: str) -> PodInfo:
    md = pod["metadata"]
    aff = (pod.get("spec") or {}).get("affinity") or {}
    anti = ((aff.get("podAntiAffinity") or {}).get("requiredDuringSchedulingIgnoredDuringExecution")) or []
    return PodInfo(
        key=f"{md.get('namespace')}/{md['name']}",
        namespace=md.get("namespace") or "default",
        name=md["name"],
        uid=md.get("uid", ""),
        labels=md.get("labels") or {},
        node=node,
        priority=pod_priority(pod),
        req=pod_requests(pod),
        ports=host_ports(pod),
        anti_terms=anti,
        pod=pod,
    )


@dataclass(slots=True)
class NodeInfo:
    name: str
    node: dict
    labels: dict[str, str]
    alloc: Resources
    requested: Resources
    nonzero_cpu: int  # requested with kube's defaults for pods without requests (for scoring)
    nonzero_mem: int
    taints: list[dict]
    unschedulable: bool
    pods: dict[str, PodInfo]
    ports: collections.Counter
    images: dict[str, int]
    nominated: dict[str, tuple[int, Resources]]
    generation: int = 0
    plain: bool = True  # schedulable, no NoSchedule/NoExecute taints (fast path)


def make_nodeinfo(node: dict, old: NodeInfo | None = None) -> NodeInfo:
    st = node.get("status") or {}
    alloc = _parse_resources(st.get("allocatable") or st.get("capacity"))
    if not alloc.pods:
        alloc.pods = 110
    images: dict[str, int] = {}
    for img in st.get("images") or []:
        for n in img.get("names") or []:
            images[n] = int(img.get("sizeBytes") or 0)
    spec = node.get("spec") or {}
    ni = NodeInfo(
        name=node["metadata"]["name"],
        node=node,
        labels=node["metadata"].get("labels") or {},
        alloc=alloc,
        requested=old.requested if old else Resources(),
        nonzero_cpu=old.nonzero_cpu if old else 0,
        nonzero_mem=old.nonzero_mem if old else 0,
        taints=list(spec.get("taints") or []),
        unschedulable=bool(spec.get("unschedulable")),
        pods=old.pods if old else {},
        ports=old.ports if old else collections.Counter(),
        images=images,
        nominated=old.nominated if old else {},
        generation=(old.generation + 1) if old else 0,
    )
    ni.labels.setdefault("kubernetes.io/hostname", ni.name)
    ni.plain = not ni.unschedulable and not any(t.get("effect") in ("NoSchedule", "NoExecute") for t in ni.taints)
    return ni


class Cache:
    """Nodes and assigned pods. ``label_index[(ns, k, v)]`` holds keys of assigned pods."""

    def __init__(self) -> None:
        self.nodes: dict[str, NodeInfo] = {}
        self.node_list: list[NodeInfo] = []
        self.pods: dict[str, PodInfo] = {}
        self.assumed: set[str] = set()
        self.label_index: dict[tuple[str, str, str], set[str]] = collections.defaultdict(set)
        # existing pods' required anti-affinity terms grouped by signature:
        # sig -> [term, owner namespace, Counter(topology value -> count)]
        self.anti: dict[str, list[Any]] = {}
        self.term_counts: dict[tuple, tuple] = {}  # see domain_counts
        self.tainted: set[str] = set()  # nodes with taints (scoring needs TaintToleration)
        self.imaged: set[str] = set()  # nodes reporting images (ImageLocality)

    # nodes
    def set_node(self, node: dict) -> NodeInfo:
        name = node["metadata"]["name"]
        ni = make_nodeinfo(node, self.nodes.get(name))
        old = self.nodes.get(name)
        if old is not None and old.labels != ni.labels:
            self.term_counts.clear()  # topology moved: recount lazily
        (self.tainted.add if ni.taints else self.tainted.discard)(name)
        (self.imaged.add if ni.images else self.imaged.discard)(name)
        if name not in self.nodes:
            self.nodes[name] = ni
            self.node_list.append(ni)
        else:
            self.nodes[name] = ni
            self.node_list = [self.nodes[n.name] for n in self.node_list]
        return ni

    def remove_node(self, name: str) -> None:
        self.tainted.discard(name)
        self.imaged.discard(name)
        if self.nodes.pop(name, None) is not None:
            self.node_list = [n for n in self.node_list if n.name != name]

    # pods
    def add_pod(self, pod: dict, node: str) -> PodInfo:
        key = f"{pod['metadata'].get('namespace')}/{pod['metadata']['name']}"
        old = self.pods.get(key)
        if old is not None:
            if old.node == node and old.labels == (pod["metadata"].get("labels") or {}):
                old.pod = pod
                self.assumed.discard(key)
                return old
            self.remove_pod(key)
        pi = make_podinfo(pod, node)
        self._account(pi, 1)
        self.pods[key] = pi
        return pi

    def assume(self, pod: dict, node: str) -> PodInfo:
        pi = self.add_pod(pod, node)
        self.assumed.add(pi.key)
        return pi

    def remove_pod(self, key: str) -> None:
        pi = self.pods.pop(key, None)
        self.assumed.discard(key)
        if pi is not None:
            self._account(pi, -1)

    def _account(self, pi: PodInfo, sign: int) -> None:
        ni = self.nodes.get(pi.node)
        if ni is None and sign > 0:
            # pod on a node we don't know yet: make a placeholder
            ni = self.set_node({"metadata": {"name": pi.node, "labels": {}}, "status": {"allocatable": {}}})
            ni.unschedulable = True
            ni.plain = False
        if ni is not None:
            ni.requested.add(pi.req, sign)
            ni.nonzero_cpu += sign * (pi.req.cpu or DEFAULT_MILLI_CPU)
            ni.nonzero_mem += sign * (pi.req.mem or DEFAULT_MEMORY)
            if sign > 0:
                ni.pods[pi.key] = pi
                for p in pi.ports:
                    ni.ports[p] += 1
            else:
                ni.pods.pop(pi.key, None)
                for p in pi.ports:
                    ni.ports[p] -= 1
                    if ni.ports[p] <= 0:
                        del ni.ports[p]
            ni.generation += 1
        for k, v in pi.labels.items():
            s = self.label_index[(pi.namespace, k, v)]
            if sign > 0:
                s.add(pi.key)
            else:
                s.discard(pi.key)
                if not s:
                    del self.label_index[(pi.namespace, k, v)]
        if self.term_counts and ni is not None:
            from tugboat.cluster.client.util import match_labels

            for nss, selector, tk, counter in self.term_counts.values():
                if (nss is None or pi.namespace in nss) and tk in ni.labels and match_labels(selector, pi.labels):
                    v = ni.labels[tk]
                    counter[v] += sign
                    if counter[v] <= 0:
                        del counter[v]
        if pi.anti_terms:
            labels = ni.labels if ni else {}
            for term in pi.anti_terms:
                sig = f"{pi.namespace}|{term_signature(term)}"
                ent = self.anti.get(sig)
                if ent is None:
                    ent = self.anti[sig] = [term, pi.namespace, collections.Counter()]
                tv = labels.get(term.get("topologyKey", ""))
                if tv is not None:
                    ent[2][tv] += sign
                    if ent[2][tv] <= 0:
                        del ent[2][tv]
                if not ent[2]:
                    del self.anti[sig]

    def domain_counts(self, namespaces: set[str] | None, selector: dict, topology_key: str) -> collections.Counter:
        """Assigned pods matching (namespaces, selector) per value of ``topology_key``: a live counter
        kept up to date as pods come and go (inter-pod affinity without rescanning pods)."""
        k = (frozenset(namespaces) if namespaces is not None else None, term_signature(selector), topology_key)
        ent = self.term_counts.get(k)
        if ent is None:
            if len(self.term_counts) > 512:
                self.term_counts.clear()
            counter: collections.Counter = collections.Counter()
            for p in self.matching_pods(namespaces, selector):
                ni = self.nodes.get(p.node)
                if ni is not None and topology_key in ni.labels:
                    counter[ni.labels[topology_key]] += 1
            ent = self.term_counts[k] = (namespaces, selector, topology_key, counter)
        return ent[3]

    def matching_pods(self, namespaces: set[str] | None, selector: dict) -> list[PodInfo]:
        """Assigned pods in ``namespaces`` (None = all) whose labels match ``selector``."""
        from tugboat.cluster.client.util import match_labels

        ml = selector.get("matchLabels") or {}
        cands: set[str] | None = None
        if ml:
            k, v = next(iter(ml.items()))
            cands = set()
            for ns in namespaces if namespaces is not None else {n for (n, _, _) in self.label_index}:
                cands |= self.label_index.get((ns, k, v), set())
            pis = [self.pods[c] for c in cands if c in self.pods]
        else:
            pis = [p for p in self.pods.values() if namespaces is None or p.namespace in namespaces]
        return [p for p in pis if match_labels(selector, p.labels)]


def term_signature(term: dict) -> str:
    import json

    return json.dumps(term, sort_keys=True)
