"""Filter and score plugins, in kube-scheduler's terms.

A filter returns ``None`` when the node fits, or the reason kube prints in
``0/N nodes are available: …``. Scores return 0..100 per node (normalised over the feasible nodes
by :func:`normalize` where kube does) and are weighted as in kube's default profile.
"""

from __future__ import annotations

import collections
import math
from dataclasses import dataclass, field
from typing import Any

from tugboat.cluster.client.util import match_expression, match_labels
from tugboat.cluster.scheduler.cache import (
    DEFAULT_MEMORY,
    DEFAULT_MILLI_CPU,
    Cache,
    NodeInfo,
    PodInfo,
    Resources,
    host_ports,
    pod_priority,
    pod_requests,
)

MB = 1024 * 1024


def tolerates(tolerations: list[dict], taint: dict) -> bool:
    for t in tolerations:
        if t.get("effect") and t["effect"] != taint.get("effect"):
            continue
        op = t.get("operator") or "Equal"
        if not t.get("key"):
            if op == "Exists":
                return True
            continue
        if t["key"] != taint.get("key"):
            continue
        if op == "Exists" or (t.get("value") or "") == (taint.get("value") or ""):
            return True
    return False


def node_selector_term_matches(term: dict, ni: NodeInfo) -> bool:
    exprs = term.get("matchExpressions") or []
    fields = term.get("matchFields") or []
    if not exprs and not fields:
        return False
    for e in exprs:
        if not match_expression(e, ni.labels):
            return False
    for f in fields:
        if f.get("key") == "metadata.name" and not match_expression({**f, "key": "n"}, {"n": ni.name}):
            return False
    return True


@dataclass
class PodState:
    """Everything about the pod being scheduled, computed once per attempt (kube's PreFilter)."""

    pod: dict
    key: str
    namespace: str
    labels: dict[str, str]
    priority: int
    req: Resources
    ports: list[tuple[str, str, int]]
    node_selector: dict[str, str]
    required_terms: list[dict] | None
    preferred_terms: list[dict]
    tolerations: list[dict]
    affinity_terms: list[dict]  # required pod affinity
    anti_terms: list[dict]  # required pod anti-affinity
    pref_affinity: list[tuple[int, dict]]  # (weight, term); negative weight = anti
    spread_hard: list[dict]
    spread_soft: list[dict]
    images: list[str]
    pvc_terms: list[list[dict]] | None = None  # PV node affinity: one nodeSelectorTerms list per volume
    pvc_error: str | None = None
    # precomputed topology state
    affinity_domains: list[tuple[str, Any]] = field(default_factory=list)  # topology key, values in use (None: any)
    anti_domains: list[tuple[str, Any]] = field(default_factory=list)
    existing_anti_domains: list[tuple[str, Any]] = field(default_factory=list)  # topology key, values in use
    spread_counts: list[tuple[dict, dict[str, int], int]] = field(default_factory=list)
    pref_counts: list[tuple[int, str, collections.Counter]] = field(default_factory=list)


def _term_namespaces(term: dict, pod_ns: str) -> set[str] | None:
    nss = term.get("namespaces")
    if nss:
        return set(nss)
    if term.get("namespaceSelector") is not None and term["namespaceSelector"] == {}:
        return None  # all namespaces
    return {pod_ns}


def prepare(pod: dict, cache: Cache) -> PodState:
    md, spec = pod["metadata"], pod.get("spec") or {}
    aff = spec.get("affinity") or {}
    na = aff.get("nodeAffinity") or {}
    req_terms = ((na.get("requiredDuringSchedulingIgnoredDuringExecution") or {}).get("nodeSelectorTerms"))
    pa = aff.get("podAffinity") or {}
    paa = aff.get("podAntiAffinity") or {}
    pref_aff = [(int(w.get("weight") or 0), w.get("podAffinityTerm") or {})
                for w in pa.get("preferredDuringSchedulingIgnoredDuringExecution") or []]
    pref_aff += [(-int(w.get("weight") or 0), w.get("podAffinityTerm") or {})
                 for w in paa.get("preferredDuringSchedulingIgnoredDuringExecution") or []]
    spreads = spec.get("topologySpreadConstraints") or []
    st = PodState(
        pod=pod,
        key=f"{md.get('namespace')}/{md['name']}",
        namespace=md.get("namespace") or "default",
        labels=md.get("labels") or {},
        priority=pod_priority(pod),
        req=pod_requests(pod),
        ports=host_ports(pod),
        node_selector=spec.get("nodeSelector") or {},
        required_terms=req_terms,
        preferred_terms=na.get("preferredDuringSchedulingIgnoredDuringExecution") or [],
        tolerations=spec.get("tolerations") or [],
        affinity_terms=pa.get("requiredDuringSchedulingIgnoredDuringExecution") or [],
        anti_terms=paa.get("requiredDuringSchedulingIgnoredDuringExecution") or [],
        pref_affinity=pref_aff,
        spread_hard=[c for c in spreads if c.get("whenUnsatisfiable", "DoNotSchedule") == "DoNotSchedule"],
        spread_soft=[c for c in spreads if c.get("whenUnsatisfiable") == "ScheduleAnyway"],
        images=[c.get("image", "") for c in spec.get("containers") or []],
    )
    # pod affinity: domains (topology values) that hold at least one matching pod
    for term in st.affinity_terms:
        tk = term.get("topologyKey", "")
        counts = cache.domain_counts(_term_namespaces(term, st.namespace), term.get("labelSelector") or {}, tk)
        if not counts and match_labels(term.get("labelSelector") or {}, st.labels):
            st.affinity_domains.append((tk, None))  # first pod of a group that selects itself
        else:
            st.affinity_domains.append((tk, counts))
    for term in st.anti_terms:
        tk = term.get("topologyKey", "")
        counts = cache.domain_counts(_term_namespaces(term, st.namespace), term.get("labelSelector") or {}, tk)
        st.anti_domains.append((tk, counts))
    # existing pods' anti-affinity that this pod would violate
    for term, owner_ns, counter in cache.anti.values():
        nss = _term_namespaces(term, owner_ns)
        if (nss is None or st.namespace in nss) and match_labels(term.get("labelSelector") or {}, st.labels):
            st.existing_anti_domains.append((term.get("topologyKey", ""), counter))
    # preferred (anti-)affinity: matching pods per domain
    for w, term in st.pref_affinity:
        tk = term.get("topologyKey", "")
        cnt: collections.Counter = collections.Counter()
        for p in cache.matching_pods(_term_namespaces(term, st.namespace), term.get("labelSelector") or {}):
            ni = cache.nodes.get(p.node)
            if ni is not None and tk in ni.labels:
                cnt[ni.labels[tk]] += 1
        st.pref_counts.append((w, tk, cnt))
    # topology spread: matching pods per domain over nodes that pass the pod's node affinity/selector
    for c in st.spread_hard + st.spread_soft:
        tk = c.get("topologyKey", "")
        sel = c.get("labelSelector") or {}
        counts: dict[str, int] = {}
        for ni in cache.node_list:
            if tk not in ni.labels or not _node_affinity_ok(st, ni):
                continue
            counts.setdefault(ni.labels[tk], 0)
        for p in cache.matching_pods({st.namespace}, sel):
            ni = cache.nodes.get(p.node)
            if ni is not None and ni.labels.get(tk) in counts:
                counts[ni.labels[tk]] += 1
        st.spread_counts.append((c, counts, min(counts.values()) if counts else 0))
    return st


def _node_affinity_ok(st: PodState, ni: NodeInfo) -> bool:
    for k, v in st.node_selector.items():
        if ni.labels.get(k) != v:
            return False
    if st.required_terms is not None:
        return any(node_selector_term_matches(t, ni) for t in st.required_terms)
    return True


# ---- filters: each returns None or a list of reasons
def filter_node(st: PodState, ni: NodeInfo) -> list[str] | None:
    # NodeUnschedulable
    if ni.unschedulable and not tolerates(st.tolerations, {"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"}):
        return ["node(s) were unschedulable"]
    # NodeAffinity + nodeSelector
    if (st.node_selector or st.required_terms is not None) and not _node_affinity_ok(st, ni):
        return ["node(s) didn't match Pod's node affinity/selector"]
    # TaintToleration
    for t in ni.taints:
        if t.get("effect") in ("NoSchedule", "NoExecute") and not tolerates(st.tolerations, t):
            return [f"node(s) had untolerated taint {{{t.get('key')}: {t.get('value') or ''}}}"]
    # NodePorts
    if st.ports and ni.ports:
        for ip, proto, port in st.ports:
            for (eip, eproto, eport) in ni.ports:
                if eport == port and eproto == proto and (ip == eip or "0.0.0.0" in (ip, eip)):
                    return ["node(s) didn't have free ports for the requested pod ports"]
    # NodeResourcesFit
    reasons = fit_reasons(st, ni)
    if reasons:
        return reasons
    # VolumeBinding / VolumeZone
    if st.pvc_terms:
        for terms in st.pvc_terms:
            if not any(node_selector_term_matches(t, ni) for t in terms):
                return ["node(s) had volume node affinity conflict"]
    # InterPodAffinity
    for tk, domains in st.affinity_domains:
        if tk not in ni.labels:
            return ["node(s) didn't match pod affinity rules"]
        if domains is not None and ni.labels[tk] not in domains:
            return ["node(s) didn't match pod affinity rules"]
    for tk, domains in st.anti_domains:
        if tk in ni.labels and ni.labels[tk] in domains:
            return ["node(s) didn't match pod anti-affinity rules"]
    for tk, domains in st.existing_anti_domains:
        if tk in ni.labels and ni.labels[tk] in domains:
            return ["node(s) didn't satisfy existing pods anti-affinity rules"]
    # PodTopologySpread (DoNotSchedule)
    for c, counts, minimum in st.spread_counts:
        if c.get("whenUnsatisfiable", "DoNotSchedule") != "DoNotSchedule":
            continue
        tk = c.get("topologyKey", "")
        if tk not in ni.labels:
            return ["node(s) didn't match pod topology spread constraints (missing required label)"]
        self_match = 1 if match_labels(c.get("labelSelector") or {}, st.labels) else 0
        if counts.get(ni.labels[tk], 0) + self_match - minimum > int(c.get("maxSkew") or 1):
            return ["node(s) didn't match pod topology spread constraints"]
    return None


def fit_reasons(st: PodState, ni: NodeInfo, requested: Resources | None = None) -> list[str]:
    r = requested or ni.requested
    req = st.req
    cpu, mem, pods = r.cpu, r.mem, r.pods
    if ni.nominated:
        for k, (prio, nreq) in ni.nominated.items():
            if k != st.key and prio >= st.priority:
                cpu += nreq.cpu
                mem += nreq.mem
                pods += 1
    out = []
    if pods + 1 > ni.alloc.pods:
        out.append("Too many pods")
    if req.cpu and cpu + req.cpu > ni.alloc.cpu:
        out.append("Insufficient cpu")
    if req.mem and mem + req.mem > ni.alloc.mem:
        out.append("Insufficient memory")
    for k, v in req.other.items():
        if v and r.other.get(k, 0) + v > ni.alloc.other.get(k, 0):
            out.append(f"Insufficient {k}")
    return out


# ---- scores
def score_resources(st: PodState, ni: NodeInfo) -> tuple[float, float]:
    """(least allocated, balanced allocation), each 0..100."""
    cpu_req = ni.nonzero_cpu + (st.req.cpu or DEFAULT_MILLI_CPU)
    mem_req = ni.nonzero_mem + (st.req.mem or DEFAULT_MEMORY)
    ac, am = ni.alloc.cpu, ni.alloc.mem
    if ac <= 0 or am <= 0:
        return 0.0, 0.0
    fc, fm = min(cpu_req / ac, 1.0), min(mem_req / am, 1.0)
    least = ((1 - fc) + (1 - fm)) * 50
    balanced = (1 - abs(fc - fm) / 2) * 100
    return least, balanced


def score_node_affinity(st: PodState, ni: NodeInfo) -> float:
    s = 0
    for p in st.preferred_terms:
        if node_selector_term_matches(p.get("preference") or {}, ni):
            s += int(p.get("weight") or 0)
    return s


def score_taints(st: PodState, ni: NodeInfo) -> float:
    return sum(1 for t in ni.taints if t.get("effect") == "PreferNoSchedule" and not tolerates(st.tolerations, t))


def score_interpod(st: PodState, ni: NodeInfo) -> float:
    s = 0
    for w, tk, cnt in st.pref_counts:
        if tk in ni.labels:
            s += w * cnt.get(ni.labels[tk], 0)
    return s


def score_spread(st: PodState, ni: NodeInfo) -> float:
    """Lower is better (matching pods in the node's domains)."""
    s = 0.0
    for c, counts, _ in st.spread_counts:
        tk = c.get("topologyKey", "")
        if tk in ni.labels:
            s += counts.get(ni.labels[tk], 0) + math.log(len(counts) + 2)
    return s


def score_images(st: PodState, ni: NodeInfo, spread: dict[str, float]) -> float:
    if not ni.images:
        return 0.0
    total = 0.0
    for img in st.images:
        size = ni.images.get(img) or ni.images.get(_normalize_image(img))
        if size:
            total += size * spread.get(img, 1.0)
    lo, hi = 23 * MB, 1000 * MB * max(1, len(st.images))
    if total < lo:
        return 0.0
    return min(100.0, (total - lo) * 100 / (hi - lo))


def _normalize_image(img: str) -> str:
    name = img
    if "/" not in name.split(":")[0]:
        name = "docker.io/library/" + name
    elif name.count("/") == 1 and "." not in name.split("/")[0]:
        name = "docker.io/" + name
    if ":" not in name.rsplit("/", 1)[-1] and "@" not in name:
        name += ":latest"
    return name


def score_resources_all(st: PodState, nodes: list[NodeInfo]) -> list[float]:
    """least allocated + balanced allocation (weights 1 and 1) for every node, inlined for speed."""
    ncpu = st.req.cpu or DEFAULT_MILLI_CPU
    nmem = st.req.mem or DEFAULT_MEMORY
    out = []
    append = out.append
    for ni in nodes:
        ac, am = ni.alloc.cpu, ni.alloc.mem
        if ac <= 0 or am <= 0:
            append(0.0)
            continue
        fc = (ni.nonzero_cpu + ncpu) / ac
        fm = (ni.nonzero_mem + nmem) / am
        if fc > 1.0:
            fc = 1.0
        if fm > 1.0:
            fm = 1.0
        d = fc - fm
        append((2.0 - fc - fm) * 50 + (1.0 - (d if d > 0 else -d) / 2) * 100)
    return out


def is_simple(st: PodState) -> bool:
    """True when only resources matter for filtering (the scheduler's fast path)."""
    return not (st.node_selector or st.required_terms is not None or st.ports or st.pvc_terms or st.affinity_domains
                or st.anti_domains or st.existing_anti_domains or st.spread_counts or st.req.other)


def fast_path_ok(st: PodState) -> bool:
    """Pods the scheduler's one-pass path handles: resources (cpu, memory, pods) and required pod
    (anti-)affinity only; no node selection terms, ports, volumes, spread or preferences."""
    return not (st.node_selector or st.required_terms is not None or st.ports or st.pvc_terms or st.spread_counts
                or st.req.other or st.preferred_terms or st.pref_counts)


def normalize(values: list[float], *, reverse: bool = False) -> list[float]:
    if not values:
        return values
    hi, lo = max(values), min(values)
    if hi == lo:
        return [0.0 if not reverse else 100.0] * len(values) if hi == 0 else [100.0] * len(values)
    if reverse:
        return [(hi - v) * 100 / (hi - lo) for v in values]
    return [(v - lo) * 100 / (hi - lo) for v in values]


def pod_fits_after_removing(st: PodState, ni: NodeInfo, victims: list[PodInfo]) -> bool:
    """Whether the pod fits ``ni`` when ``victims`` are gone (resources and host ports only)."""
    r = Resources(ni.requested.cpu, ni.requested.mem, ni.requested.pods, dict(ni.requested.other))
    ports: collections.Counter = collections.Counter(ni.ports)
    for v in victims:
        r.add(v.req, -1)
        for p in v.ports:
            ports[p] -= 1
    if fit_reasons(st, ni, r):
        return False
    for ip, proto, port in st.ports:
        for (eip, eproto, eport), n in ports.items():
            if n > 0 and eport == port and eproto == proto and (ip == eip or "0.0.0.0" in (ip, eip)):
                return False
    return True


PREEMPTION_RESOLVABLE = ("Insufficient", "Too many pods", "node(s) didn't have free ports")


def resolvable(reasons: list[str]) -> bool:
    return all(r.startswith(PREEMPTION_RESOLVABLE) for r in reasons)


_ = Any
