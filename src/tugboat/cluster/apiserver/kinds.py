"""The built-in kinds: names, defaults, validation, table columns, field selectors."""

from __future__ import annotations

import re
import time
from typing import Any

from tugboat.cluster.apiserver.meta import age, human_duration, parse_time, selector_from_label_selector
from tugboat.cluster.apiserver.registry import Cause, Column, Obj, Registry, ResourceType

# --- validation helpers ----------------------------------------------------------------------------
DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
QUALIFIED_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")

SUBDOMAIN_MSG = ("a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', "
                 "and must start and end with an alphanumeric character (e.g. 'example.com', regex used for "
                 "validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')")
LABEL_MSG = ("a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must "
             "start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for "
             "validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')")
DNS1035_MSG = ("a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an "
               "alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', "
               "regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')")


def fmt(v: Any) -> str:
    if isinstance(v, str):
        return '"' + v + '"'
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


class Errs(list[Cause]):
    def required(self, path: str, detail: str = "") -> None:
        self.append(("FieldValueRequired", path, "Required value" + (f": {detail}" if detail else "")))

    def invalid(self, path: str, value: Any, detail: str) -> None:
        self.append(("FieldValueInvalid", path, f"Invalid value: {fmt(value)}: {detail}"))

    def unsupported(self, path: str, value: Any, allowed: list[str]) -> None:
        self.append(("FieldValueNotSupported", path,
                     f"Unsupported value: {fmt(value)}: supported values: " + ", ".join(fmt(a) for a in allowed)))

    def forbidden(self, path: str, detail: str) -> None:
        self.append(("FieldValueForbidden", path, f"Forbidden: {detail}"))

    def too_long(self, path: str, value: Any, n: int) -> None:
        self.append(("FieldValueTooLong", path, f"Too long: may not be more than {n} bytes"))

    def nonneg(self, path: str, v: Any) -> None:
        if v is not None and (not isinstance(v, int) or v < 0):
            self.invalid(path, v, "must be greater than or equal to 0")

    def dns_label(self, path: str, v: Any) -> None:
        if not isinstance(v, str) or not DNS1123_LABEL.match(v) or len(v) > 63:
            self.invalid(path, v, LABEL_MSG if isinstance(v, str) and len(v) <= 63 else "must be no more than 63 characters")


def _labels(errs: Errs, path: str, labels: Any) -> None:
    if labels is None:
        return
    if not isinstance(labels, dict):
        errs.invalid(path, labels, "must be a map of strings")
        return
    for k, v in labels.items():
        name = k.rsplit("/", 1)[-1]
        prefix = k.rsplit("/", 1)[0] if "/" in k else ""
        if not QUALIFIED_NAME.match(name) or len(name) > 63 or (prefix and not DNS1123_SUBDOMAIN.match(prefix)):
            errs.invalid(path, k, "name part must consist of alphanumeric characters, '-', '_' or '.', and must "
                         "start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', "
                         "regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')")
        if not isinstance(v, str) or len(v) > 63 or not LABEL_VALUE.match(v):
            errs.invalid(f"{path}", v, "a valid label must be an empty string or consist of alphanumeric "
                         "characters, '-', '_' or '.', and must start and end with an alphanumeric character "
                         "(e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is "
                         "'(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')")


def validate_meta(obj: Obj, name_re: re.Pattern[str] = DNS1123_SUBDOMAIN, name_msg: str = SUBDOMAIN_MSG) -> Errs:
    errs = Errs()
    md = obj.get("metadata") or {}
    name = md.get("name")
    if isinstance(name, str) and name:
        if len(name) > 253:
            errs.invalid("metadata.name", name, "must be no more than 253 characters")
        elif not name_re.match(name):
            errs.invalid("metadata.name", name, name_msg)
    _labels(errs, "metadata.labels", md.get("labels"))
    refs = md.get("ownerReferences")
    if refs is not None:
        if not isinstance(refs, list):
            errs.invalid("metadata.ownerReferences", refs, "must be a list")
        else:
            controllers = 0
            for ref in refs:
                if not isinstance(ref, dict):
                    errs.invalid("metadata.ownerReferences", ref, "must be an object")
                    continue
                for f, what in (("apiVersion", "version"), ("kind", "kind"), ("name", "name"), ("uid", "uid")):
                    if not ref.get(f):
                        errs.invalid(f"metadata.ownerReferences.{f}", "", f"{what} must not be empty")
                controllers += bool(ref.get("controller"))
            if controllers > 1:
                errs.invalid("metadata.ownerReferences", "[...]", "Only one reference can have Controller set to true")
    fins = md.get("finalizers")
    if fins is not None and (not isinstance(fins, list) or any(not isinstance(f, str) or not f for f in fins)):
        errs.invalid("metadata.finalizers", fins, "finalizers must be non-empty strings")
    ann = md.get("annotations")
    if ann is not None:
        if not isinstance(ann, dict) or any(not isinstance(v, str) for v in ann.values()):
            errs.invalid("metadata.annotations", ann, "must be a map of strings")
        elif sum(len(k) + len(v) for k, v in ann.items()) > 256 * 1024:
            errs.too_long("metadata.annotations", "", 262144)
    return errs


# --- pods ------------------------------------------------------------------------------------------
def _default_container(c: Obj) -> None:
    img = c.get("image") or ""
    if "imagePullPolicy" not in c:
        last = img.rsplit("/", 1)[-1]
        tagged = ":" in last and not last.endswith(":latest")
        c["imagePullPolicy"] = "IfNotPresent" if (tagged or "@" in img) else "Always"
    c.setdefault("terminationMessagePath", "/dev/termination-log")
    c.setdefault("terminationMessagePolicy", "File")
    c.setdefault("resources", {})
    for p in c.get("ports") or []:
        if isinstance(p, dict):
            p.setdefault("protocol", "TCP")
    for e in c.get("env") or []:
        vf = e.get("valueFrom") if isinstance(e, dict) else None
        if isinstance(vf, dict) and isinstance(vf.get("fieldRef"), dict):
            vf["fieldRef"].setdefault("apiVersion", "v1")
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        pr = c.get(probe)
        if isinstance(pr, dict):
            # kube's SetDefaults_Probe: an absent or zero value takes the default
            for k, d in (("timeoutSeconds", 1), ("periodSeconds", 10), ("successThreshold", 1), ("failureThreshold", 3)):
                if not pr.get(k):
                    pr[k] = d
            if isinstance(pr.get("httpGet"), dict):
                pr["httpGet"].setdefault("path", "/")
                pr["httpGet"].setdefault("scheme", "HTTP")


def default_pod_spec(spec: Obj) -> None:
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("securityContext", {})
    spec.setdefault("schedulerName", "default-scheduler")
    for c in (spec.get("containers") or []) + (spec.get("initContainers") or []):
        if isinstance(c, dict):
            _default_container(c)
    for v in spec.get("volumes") or []:
        if isinstance(v, dict):
            if isinstance(v.get("configMap"), dict):
                v["configMap"].setdefault("defaultMode", 420)
            if isinstance(v.get("secret"), dict):
                v["secret"].setdefault("defaultMode", 420)
            if len(v) == 1 and "name" in v:
                v["emptyDir"] = {}
    tols = spec.get("tolerations")
    if isinstance(tols, list):
        for t in tols:
            if isinstance(t, dict) and t.get("operator") is None and "value" not in t and "key" in t:
                t.setdefault("operator", "Equal")


def default_pod(obj: Obj) -> None:
    spec = obj.setdefault("spec", {})
    default_pod_spec(spec)
    spec.setdefault("serviceAccountName", "default")
    spec.setdefault("serviceAccount", spec["serviceAccountName"])
    spec.setdefault("enableServiceLinks", True)
    spec.setdefault("priority", 0)
    spec.setdefault("preemptionPolicy", "PreemptLowerPriority")
    if "tolerations" not in spec:
        spec["tolerations"] = [
            {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
            {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
        ]


def _qos(spec: Obj) -> str:
    reqs, lims, any_set = [], [], False
    for c in spec.get("containers") or []:
        r = (c.get("resources") or {}) if isinstance(c, dict) else {}
        req, lim = r.get("requests") or {}, r.get("limits") or {}
        if req or lim:
            any_set = True
        reqs.append({**lim, **req})
        lims.append(lim)
    if not any_set:
        return "BestEffort"
    for req, lim in zip(reqs, lims, strict=True):
        if not lim.get("cpu") or not lim.get("memory") or req.get("cpu") != lim.get("cpu") or req.get("memory") != lim.get("memory"):
            return "Burstable"
    return "Guaranteed"


def pod_initial_status(obj: Obj) -> None:
    obj["status"] = {"phase": "Pending", "qosClass": _qos(obj.get("spec") or {})}


def _validate_port_num_or_name(errs: Errs, path: str, port: Any) -> None:
    if isinstance(port, bool) or not isinstance(port, (int, str)):
        errs.invalid(path, port, "must be an integer or a port name")
    elif isinstance(port, int):
        if not 0 < port < 65536:
            errs.invalid(path, port, "must be between 1 and 65535, inclusive")
    elif not port:
        errs.required(path)
    else:  # kube's IsValidPortName, every message it gives
        if len(port) > 15:
            errs.invalid(path, port, "must be no more than 15 characters")
        if not re.fullmatch(r"[-a-z0-9]+", port):
            errs.invalid(path, port, "must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)")
        elif not re.search(r"[a-z]", port):
            errs.invalid(path, port, "must contain at least one letter (a-z)")
        if "--" in port:
            errs.invalid(path, port, "must not contain consecutive hyphens")
        if port.startswith("-") or port.endswith("-"):
            errs.invalid(path, port, "must not begin or end with a hyphen")


def _validate_handler(errs: Errs, path: str, h: Obj, kinds: tuple[str, ...]) -> None:
    """kube's validateHandler: exactly one handler, each checked."""
    n = 0
    for kind in kinds:
        v = h.get(kind)
        if v is None:
            continue
        if n:
            errs.forbidden(f"{path}.{kind}", "may not specify more than 1 handler type")
            continue
        n += 1
        if not isinstance(v, dict):
            errs.invalid(f"{path}.{kind}", v, "must be an object")
        elif kind == "exec":
            if not v.get("command"):
                errs.required(f"{path}.exec.command")
        elif kind == "httpGet":
            if not v.get("path"):
                errs.required(f"{path}.httpGet.path")
            _validate_port_num_or_name(errs, f"{path}.httpGet.port", v.get("port"))
            scheme = v.get("scheme", "HTTP")
            if scheme not in ("HTTP", "HTTPS"):
                errs.unsupported(f"{path}.httpGet.scheme", scheme, ["HTTP", "HTTPS"])
        elif kind == "tcpSocket":
            _validate_port_num_or_name(errs, f"{path}.tcpSocket.port", v.get("port"))
        elif kind == "grpc":
            gp = v.get("port")
            if isinstance(gp, bool) or not isinstance(gp, int) or not 0 < gp < 65536:
                errs.invalid(f"{path}.grpc.port", gp, "must be between 1 and 65535, inclusive")
        elif kind == "sleep":
            sec = v.get("seconds")
            if isinstance(sec, bool) or not isinstance(sec, int) or sec <= 0:
                errs.invalid(f"{path}.sleep.seconds", sec, "must be greater than 0")
    if n == 0:
        errs.required(path, "must specify a handler type")


def _validate_probes_and_hooks(errs: Errs, p: str, c: Obj, init: bool) -> None:
    lc = c.get("lifecycle")
    if init and c.get("restartPolicy") != "Always":
        for f in ("lifecycle", "livenessProbe", "readinessProbe", "startupProbe"):
            if c.get(f) is not None:
                errs.forbidden(f"{p}.{f}", "may not be set for init containers without restartPolicy=Always")
        return
    if isinstance(lc, dict):
        for hook in ("postStart", "preStop"):
            h = lc.get(hook)
            if h is not None:
                if isinstance(h, dict):
                    _validate_handler(errs, f"{p}.lifecycle.{hook}", h, ("exec", "httpGet", "tcpSocket", "sleep"))
                else:
                    errs.invalid(f"{p}.lifecycle.{hook}", h, "must be an object")
    for kind in ("livenessProbe", "readinessProbe", "startupProbe"):
        pr = c.get(kind)
        if pr is None:
            continue
        pp = f"{p}.{kind}"
        if not isinstance(pr, dict):
            errs.invalid(pp, pr, "must be an object")
            continue
        _validate_handler(errs, pp, pr, ("exec", "httpGet", "tcpSocket", "grpc"))
        for f in ("initialDelaySeconds", "timeoutSeconds", "periodSeconds", "successThreshold", "failureThreshold"):
            errs.nonneg(f"{pp}.{f}", pr.get(f))
        tg = pr.get("terminationGracePeriodSeconds")
        if tg is not None and (not isinstance(tg, int) or tg <= 0):
            errs.invalid(f"{pp}.terminationGracePeriodSeconds", tg, "must be greater than 0")
        if kind == "readinessProbe" and tg is not None:
            errs.invalid(f"{pp}.terminationGracePeriodSeconds", tg, "must not be set for readinessProbes")
        if kind in ("livenessProbe", "startupProbe") and pr.get("successThreshold", 1) != 1:
            errs.invalid(f"{pp}.successThreshold", pr.get("successThreshold"), "must be 1")


def validate_containers(errs: Errs, path: str, containers: Any, required: bool = True, init: bool = False) -> None:
    if not containers:
        if required:
            errs.required(path)
        return
    if not isinstance(containers, list):
        errs.invalid(path, containers, "must be a list")
        return
    seen: set[str] = set()
    for i, c in enumerate(containers):
        p = f"{path}[{i}]"
        if not isinstance(c, dict):
            errs.invalid(p, c, "must be an object")
            continue
        name = c.get("name")
        if not name:
            errs.required(f"{p}.name")
        elif not isinstance(name, str) or not DNS1123_LABEL.match(name):
            errs.invalid(f"{p}.name", name, LABEL_MSG)
        elif name in seen:
            errs.append(("FieldValueDuplicate", f"{p}.name", f"Duplicate value: {fmt(name)}"))
        else:
            seen.add(name)
        if not c.get("image"):
            errs.required(f"{p}.image")
        pol = c.get("imagePullPolicy")
        if pol is not None and pol not in ("Always", "IfNotPresent", "Never"):
            errs.unsupported(f"{p}.imagePullPolicy", pol, ["Always", "IfNotPresent", "Never"])
        for j, port in enumerate(c.get("ports") or []):
            cp = port.get("containerPort") if isinstance(port, dict) else None
            if not isinstance(cp, int) or not 0 < cp < 65536:
                errs.invalid(f"{p}.ports[{j}].containerPort", cp, "must be between 1 and 65535, inclusive")
            proto = port.get("protocol", "TCP") if isinstance(port, dict) else "TCP"
            if proto not in ("TCP", "UDP", "SCTP"):
                errs.unsupported(f"{p}.ports[{j}].protocol", proto, ["SCTP", "TCP", "UDP"])
        _validate_probes_and_hooks(errs, p, c, init)


def validate_pod_spec(errs: Errs, path: str, spec: Any) -> None:
    if not isinstance(spec, dict):
        errs.required(path)
        return
    validate_containers(errs, f"{path}.containers", spec.get("containers"))
    validate_containers(errs, f"{path}.initContainers", spec.get("initContainers"), required=False, init=True)
    rp = spec.get("restartPolicy")
    if rp is not None and rp not in ("Always", "OnFailure", "Never"):
        errs.unsupported(f"{path}.restartPolicy", rp, ["Always", "OnFailure", "Never"])
    dp = spec.get("dnsPolicy")
    if dp is not None and dp not in ("ClusterFirstWithHostNet", "ClusterFirst", "Default", "None"):
        errs.unsupported(f"{path}.dnsPolicy", dp, ["ClusterFirst", "ClusterFirstWithHostNet", "Default", "None"])
    errs.nonneg(f"{path}.terminationGracePeriodSeconds", spec.get("terminationGracePeriodSeconds"))
    names: set[str] = set()
    for i, v in enumerate(spec.get("volumes") or []):
        n = v.get("name") if isinstance(v, dict) else None
        if not n:
            errs.required(f"{path}.volumes[{i}].name")
        elif n in names:
            errs.append(("FieldValueDuplicate", f"{path}.volumes[{i}].name", f"Duplicate value: {fmt(n)}"))
        names.add(n or "")


def validate_pod(obj: Obj, old: Obj | None) -> list[Cause]:
    errs = validate_meta(obj)
    validate_pod_spec(errs, "spec", obj.get("spec"))
    if old is not None and old.get("spec") and obj.get("spec"):
        o, n = old["spec"], obj["spec"]
        # pod updates may only change images, activeDeadlineSeconds, tolerations (additions)
        strip = ("containers", "initContainers", "activeDeadlineSeconds", "tolerations", "terminationGracePeriodSeconds",
                 "schedulingGates")
        if o.get("nodeName") and n.get("nodeName") != o.get("nodeName"):
            errs.forbidden("spec.nodeName", "pod updates may not change fields other than `spec.containers[*].image`,"
                           "`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only "
                           "additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be "
                           "set to 1 if it was previously negative)")
        elif {k: v for k, v in o.items() if k not in (*strip, "nodeName")} != {
                k: v for k, v in n.items() if k not in (*strip, "nodeName")}:
            errs.forbidden("spec", "pod updates may not change fields other than `spec.containers[*].image`,"
                           "`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only "
                           "additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be "
                           "set to 1 if it was previously negative)")
    return errs


def _pod_row(obj: Obj) -> list[Any]:
    """kubectl's pod row (printPod): READY, STATUS with init progress, RESTARTS with ``(5s ago)``."""
    spec, st = obj.get("spec") or {}, obj.get("status") or {}
    cs = st.get("containerStatuses") or []
    total = len(spec.get("containers") or [])
    ready = 0
    restarts = 0
    last_restart = 0.0
    reason = st.get("reason") or st.get("phase") or "Pending"

    def seen_restart(c: Obj) -> None:
        nonlocal last_restart
        t = parse_time(((c.get("lastState") or {}).get("terminated") or {}).get("finishedAt"))
        if t is not None and t > last_restart:
            last_restart = t

    initializing = False
    inits = st.get("initContainerStatuses") or []
    for i, c in enumerate(inits):
        restarts += int(c.get("restartCount") or 0)
        seen_restart(c)
        state = c.get("state") or {}
        term, wait = state.get("terminated"), state.get("waiting")
        if term is not None and term.get("exitCode") == 0:
            continue
        if term is not None:
            reason = "Init:" + (term.get("reason") or (f"Signal:{term['signal']}" if term.get("signal")
                                                        else f"ExitCode:{term.get('exitCode')}"))
        elif wait is not None and wait.get("reason") and wait["reason"] != "PodInitializing":
            reason = "Init:" + wait["reason"]
        else:
            reason = f"Init:{i}/{len(spec.get('initContainers') or [])}"
        initializing = True
        break
    initialized = any(c.get("type") == "Initialized" and c.get("status") == "True" for c in st.get("conditions") or [])
    if not initializing or initialized:
        restarts = 0
        has_running = False
        for c in reversed(cs):
            restarts += int(c.get("restartCount") or 0)
            seen_restart(c)
            state = c.get("state") or {}
            term, wait = state.get("terminated"), state.get("waiting")
            if wait is not None and wait.get("reason"):
                reason = wait["reason"]
            elif term is not None and term.get("reason"):
                reason = term["reason"]
            elif term is not None:
                reason = f"Signal:{term['signal']}" if term.get("signal") else f"ExitCode:{term.get('exitCode')}"
            elif c.get("ready") and state.get("running") is not None:
                has_running = True
                ready += 1
        if reason == "Completed" and has_running:
            pod_ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in st.get("conditions") or [])
            reason = "Running" if pod_ready else "NotReady"
    if (obj.get("metadata") or {}).get("deletionTimestamp") and st.get("phase") not in ("Succeeded", "Failed"):
        reason = "Unknown" if st.get("reason") == "NodeLost" else "Terminating"
    shown = str(restarts)
    if restarts and last_restart:
        shown = f"{restarts} ({human_duration(max(0.0, time.time() - last_restart))} ago)"
    gates = spec.get("readinessGates") or []
    return [obj["metadata"]["name"], f"{ready}/{total}", reason, shown, age(obj["metadata"].get("creationTimestamp")),
            st.get("podIP") or "<none>", spec.get("nodeName") or "<none>", st.get("nominatedNodeName") or "<none>",
            f"{len(gates)}" if gates else "<none>"]


def _pod_fields(obj: Obj) -> dict[str, str]:
    spec, st = obj.get("spec") or {}, obj.get("status") or {}
    return {"spec.nodeName": spec.get("nodeName") or "", "status.phase": st.get("phase") or "",
            "spec.schedulerName": spec.get("schedulerName") or "", "spec.restartPolicy": spec.get("restartPolicy") or "",
            "spec.serviceAccountName": spec.get("serviceAccountName") or "", "status.podIP": st.get("podIP") or "",
            "status.nominatedNodeName": st.get("nominatedNodeName") or "",
            "spec.hostNetwork": "true" if spec.get("hostNetwork") else "false"}


# --- workloads -------------------------------------------------------------------------------------
def _default_template(spec: Obj) -> None:
    tpl = spec.setdefault("template", {})
    tpl.setdefault("metadata", {})
    tpl["metadata"].setdefault("creationTimestamp", None)
    default_pod_spec(tpl.setdefault("spec", {}))


def default_deployment(obj: Obj) -> None:
    spec = obj.setdefault("spec", {})
    spec.setdefault("replicas", 1)
    st = spec.setdefault("strategy", {})
    st.setdefault("type", "RollingUpdate")
    if st["type"] == "RollingUpdate":
        ru = st.setdefault("rollingUpdate", {})
        ru.setdefault("maxUnavailable", "25%")
        ru.setdefault("maxSurge", "25%")
    spec.setdefault("revisionHistoryLimit", 10)
    spec.setdefault("progressDeadlineSeconds", 600)
    _default_template(spec)


def default_replicaset(obj: Obj) -> None:
    spec = obj.setdefault("spec", {})
    spec.setdefault("replicas", 1)
    _default_template(spec)


def default_statefulset(obj: Obj) -> None:
    spec = obj.setdefault("spec", {})
    spec.setdefault("replicas", 1)
    spec.setdefault("podManagementPolicy", "OrderedReady")
    us = spec.setdefault("updateStrategy", {"type": "RollingUpdate"})
    if us.get("type") == "RollingUpdate":
        us.setdefault("rollingUpdate", {"partition": 0})
    spec.setdefault("revisionHistoryLimit", 10)
    spec.setdefault("persistentVolumeClaimRetentionPolicy", {"whenDeleted": "Retain", "whenScaled": "Retain"})
    _default_template(spec)


def default_daemonset(obj: Obj) -> None:
    spec = obj.setdefault("spec", {})
    us = spec.setdefault("updateStrategy", {"type": "RollingUpdate"})
    if us.get("type") == "RollingUpdate":
        us.setdefault("rollingUpdate", {"maxUnavailable": 1, "maxSurge": 0})
    spec.setdefault("revisionHistoryLimit", 10)
    _default_template(spec)


def default_job(obj: Obj) -> None:
    spec = obj.setdefault("spec", {})
    spec.setdefault("parallelism", 1)
    spec.setdefault("completions", 1)
    spec.setdefault("backoffLimit", 6)
    spec.setdefault("completionMode", "NonIndexed")
    spec.setdefault("suspend", False)
    spec.setdefault("manualSelector", False)
    spec.setdefault("podReplacementPolicy", "TerminatingOrFailed")
    tpl = spec.setdefault("template", {})
    tpl.setdefault("spec", {}).setdefault("restartPolicy", "Never")
    # the job controller's selector: controller-uid label, as the real apiserver sets it
    uid = (obj.get("metadata") or {}).get("uid", "")
    if not spec.get("selector") and uid:
        spec["selector"] = {"matchLabels": {"batch.kubernetes.io/controller-uid": uid}}
        lb = tpl.setdefault("metadata", {}).setdefault("labels", {})
        lb.setdefault("batch.kubernetes.io/controller-uid", uid)
        lb.setdefault("controller-uid", uid)
        lb.setdefault("batch.kubernetes.io/job-name", obj["metadata"].get("name", ""))
        lb.setdefault("job-name", obj["metadata"].get("name", ""))
    _default_template(spec)


def default_cronjob(obj: Obj) -> None:
    spec = obj.setdefault("spec", {})
    spec.setdefault("concurrencyPolicy", "Allow")
    spec.setdefault("suspend", False)
    spec.setdefault("successfulJobsHistoryLimit", 3)
    spec.setdefault("failedJobsHistoryLimit", 1)
    jt = spec.setdefault("jobTemplate", {})
    jt.setdefault("metadata", {}).setdefault("creationTimestamp", None)
    jspec = jt.setdefault("spec", {})
    jspec.setdefault("template", {}).setdefault("spec", {}).setdefault("restartPolicy", "Never")
    jspec.setdefault("backoffLimit", 6)
    jspec.setdefault("completionMode", "NonIndexed")
    jspec.setdefault("suspend", False)
    jspec.setdefault("podReplacementPolicy", "TerminatingOrFailed")
    _default_template(jspec)


def validate_cronjob(obj: Obj, old: Obj | None) -> list[Cause]:
    errs = validate_meta(obj)
    spec = obj.get("spec") or {}
    sched = spec.get("schedule")
    if not sched:
        errs.required("spec.schedule")
    elif not isinstance(sched, str) or (len(sched.split()) != 5 and not sched.startswith("@")):
        errs.invalid("spec.schedule", sched, "unparseable schedule: expected exactly 5 fields or a @descriptor")
    cp = spec.get("concurrencyPolicy")
    if cp not in (None, "Allow", "Forbid", "Replace"):
        errs.unsupported("spec.concurrencyPolicy", cp, ["Allow", "Forbid", "Replace"])
    jspec = (spec.get("jobTemplate") or {}).get("spec") or {}
    validate_pod_spec(errs, "spec.jobTemplate.spec.template.spec", (jspec.get("template") or {}).get("spec"))
    return errs


def _cronjob_row(obj: Obj) -> list[Any]:
    spec, st = obj.get("spec") or {}, obj.get("status") or {}
    jt = ((spec.get("jobTemplate") or {}).get("spec") or {})
    c, i = _images(jt)
    last = st.get("lastScheduleTime")
    return [obj["metadata"]["name"], spec.get("schedule", ""), spec.get("timeZone") or "<none>",
            str(bool(spec.get("suspend"))), len(st.get("active") or []), age(last) if last else "<none>",
            age(obj["metadata"].get("creationTimestamp")), c, i,
            selector_from_label_selector(jt.get("selector")) or "<none>"]


def _selector_matches(sel: Obj | None, labels: dict[str, str]) -> bool:
    if not sel:
        return False
    for k, v in (sel.get("matchLabels") or {}).items():
        if labels.get(k) != v:
            return False
    for e in sel.get("matchExpressions") or []:
        k, op, vals = e.get("key"), e.get("operator"), e.get("values") or []
        if (op == "In" and labels.get(k) not in vals) or (op == "NotIn" and k in labels and labels[k] in vals) \
                or (op == "Exists" and k not in labels) or (op == "DoesNotExist" and k in labels):
            return False
    return True


def pod_matches_selector(sel: Obj | None, labels: dict[str, str]) -> bool:
    """policy/v1 semantics: a missing selector matches nothing, an empty one everything."""
    if sel is None:
        return False
    return _selector_matches(sel, labels) if sel else True


def validate_workload(obj: Obj, old: Obj | None, needs_selector: bool = True, replicas: bool = True) -> list[Cause]:
    errs = validate_meta(obj)
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        errs.required("spec")
        return errs
    if replicas:
        errs.nonneg("spec.replicas", spec.get("replicas"))
    sel = spec.get("selector")
    tpl = spec.get("template") or {}
    labels = (tpl.get("metadata") or {}).get("labels") or {}
    if needs_selector:
        if not sel:
            errs.required("spec.selector")
        elif not (sel.get("matchLabels") or sel.get("matchExpressions")):
            errs.invalid("spec.selector", sel, "empty selector is invalid for deployment")
        elif not _selector_matches(sel, labels):
            errs.invalid("spec.template.metadata.labels", labels, "`selector` does not match template `labels`")
        if old is not None and (old.get("spec") or {}).get("selector") not in (None, sel):
            errs.invalid("spec.selector", sel, "field is immutable")
    validate_pod_spec(errs, "spec.template.spec", tpl.get("spec"))
    rp = (tpl.get("spec") or {}).get("restartPolicy")
    if obj.get("kind") in ("Deployment", "ReplicaSet", "StatefulSet", "DaemonSet") and rp not in (None, "Always"):
        errs.unsupported("spec.template.spec.restartPolicy", rp, ["Always"])
    return errs


def _images(spec: Obj) -> tuple[str, str]:
    cs = ((spec.get("template") or {}).get("spec") or {}).get("containers") or []
    return ",".join(c.get("name", "") for c in cs), ",".join(c.get("image", "") for c in cs)


def _deploy_row(obj: Obj) -> list[Any]:
    spec, st = obj.get("spec") or {}, obj.get("status") or {}
    c, i = _images(spec)
    return [obj["metadata"]["name"], f"{st.get('readyReplicas', 0)}/{spec.get('replicas', 0)}",
            st.get("updatedReplicas", 0), st.get("availableReplicas", 0), age(obj["metadata"].get("creationTimestamp")),
            c, i, selector_from_label_selector(spec.get("selector")) or "<none>"]


def _rs_row(obj: Obj) -> list[Any]:
    spec, st = obj.get("spec") or {}, obj.get("status") or {}
    c, i = _images(spec)
    return [obj["metadata"]["name"], spec.get("replicas", 0), st.get("replicas", 0), st.get("readyReplicas", 0),
            age(obj["metadata"].get("creationTimestamp")), c, i,
            selector_from_label_selector(spec.get("selector")) or "<none>"]


def _sts_row(obj: Obj) -> list[Any]:
    spec, st = obj.get("spec") or {}, obj.get("status") or {}
    c, i = _images(spec)
    return [obj["metadata"]["name"], f"{st.get('readyReplicas', 0)}/{spec.get('replicas', 0)}",
            age(obj["metadata"].get("creationTimestamp")), c, i]


def _ds_row(obj: Obj) -> list[Any]:
    spec, st = obj.get("spec") or {}, obj.get("status") or {}
    c, i = _images(spec)
    ns = ((spec.get("template") or {}).get("spec") or {}).get("nodeSelector") or {}
    return [obj["metadata"]["name"], st.get("desiredNumberScheduled", 0), st.get("currentNumberScheduled", 0),
            st.get("numberReady", 0), st.get("updatedNumberScheduled", 0), st.get("numberAvailable", 0),
            ",".join(f"{k}={v}" for k, v in ns.items()) or "<none>", age(obj["metadata"].get("creationTimestamp")),
            c, i, selector_from_label_selector(spec.get("selector")) or "<none>"]


def _job_row(obj: Obj) -> list[Any]:
    spec, st = obj.get("spec") or {}, obj.get("status") or {}
    conds = {c.get("type"): c.get("status") for c in st.get("conditions") or []}
    status = "Complete" if conds.get("Complete") == "True" else "Failed" if conds.get("Failed") == "True" else \
        "Suspended" if spec.get("suspend") else "Running"
    from tugboat.cluster.apiserver.meta import human_duration, parse_time
    s, e = parse_time(st.get("startTime")), parse_time(st.get("completionTime"))
    import time as _t
    dur = human_duration((e or _t.time()) - s) if s else ""
    c, i = _images(spec)
    return [obj["metadata"]["name"], status, f"{st.get('succeeded', 0)}/{spec.get('completions', 1)}", dur,
            age(obj["metadata"].get("creationTimestamp")), c, i,
            selector_from_label_selector(spec.get("selector")) or "<none>"]


# --- services and friends --------------------------------------------------------------------------
def default_service(obj: Obj) -> None:
    spec = obj.setdefault("spec", {})
    spec.setdefault("type", "ClusterIP")
    spec.setdefault("sessionAffinity", "None")
    if spec["type"] != "ExternalName":
        spec.setdefault("ipFamilyPolicy", "SingleStack")
        spec.setdefault("ipFamilies", ["IPv4"])
        spec.setdefault("internalTrafficPolicy", "Cluster")
    if spec["type"] in ("NodePort", "LoadBalancer"):
        spec.setdefault("externalTrafficPolicy", "Cluster")
    for p in spec.get("ports") or []:
        if isinstance(p, dict):
            p.setdefault("protocol", "TCP")
            if "targetPort" not in p and "port" in p:
                p["targetPort"] = p["port"]


def validate_service(obj: Obj, old: Obj | None) -> list[Cause]:
    errs = validate_meta(obj, DNS1035_LABEL, DNS1035_MSG)
    spec = obj.get("spec") or {}
    t = spec.get("type", "ClusterIP")
    if t not in ("ClusterIP", "NodePort", "LoadBalancer", "ExternalName"):
        errs.unsupported("spec.type", t, ["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"])
    ports = spec.get("ports") or []
    if not ports and t != "ExternalName" and spec.get("clusterIP") != "None":
        errs.required("spec.ports")
    seen = set()
    for i, p in enumerate(ports):
        port = p.get("port") if isinstance(p, dict) else None
        if not isinstance(port, int) or not 0 < port < 65536:
            errs.invalid(f"spec.ports[{i}].port", port, "must be between 1 and 65535, inclusive")
        if len(ports) > 1 and not (isinstance(p, dict) and p.get("name")):
            errs.required(f"spec.ports[{i}].name")
        key = (p.get("port"), p.get("protocol", "TCP")) if isinstance(p, dict) else None
        if key in seen:
            errs.append(("FieldValueDuplicate", f"spec.ports[{i}]", f"Duplicate value: {fmt(str(key))}"))
        seen.add(key)
    if old is not None:
        oip = (old.get("spec") or {}).get("clusterIP")
        if oip and spec.get("clusterIP") not in (None, "", oip):
            errs.invalid("spec.clusterIPs[0]", spec.get("clusterIP"), "may not change once set")
    return errs


def _svc_row(obj: Obj) -> list[Any]:
    spec = obj.get("spec") or {}
    ports = []
    for p in spec.get("ports") or []:
        s = str(p.get("port"))
        if p.get("nodePort"):
            s += f":{p['nodePort']}"
        ports.append(f"{s}/{p.get('protocol', 'TCP')}")
    ext = spec.get("externalIPs") or []
    lb = [i.get("ip") or i.get("hostname") for i in ((obj.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []]
    external = ",".join(lb + ext) or ("<pending>" if spec.get("type") == "LoadBalancer" else
                                      spec.get("externalName") if spec.get("type") == "ExternalName" else "<none>")
    sel = spec.get("selector") or {}
    return [obj["metadata"]["name"], spec.get("type", "ClusterIP"), spec.get("clusterIP") or "<none>", external,
            ",".join(ports) or "<none>", age(obj["metadata"].get("creationTimestamp")),
            ",".join(f"{k}={v}" for k, v in sorted(sel.items())) or "<none>"]


def _endpoints_row(obj: Obj) -> list[Any]:
    eps = []
    for s in obj.get("subsets") or []:
        ports = [p.get("port") for p in s.get("ports") or []] or [None]
        for a in s.get("addresses") or []:
            for p in ports:
                eps.append(f"{a.get('ip')}:{p}" if p else a.get("ip"))
    shown = ",".join(eps[:3]) + (f" + {len(eps) - 3} more..." if len(eps) > 3 else "")
    return [obj["metadata"]["name"], shown or "<none>", age(obj["metadata"].get("creationTimestamp"))]


def _slice_row(obj: Obj) -> list[Any]:
    ports = ",".join(str(p.get("port")) for p in obj.get("ports") or []) or "<unset>"
    addrs = [a for e in obj.get("endpoints") or [] for a in e.get("addresses") or []]
    shown = ",".join(addrs[:3]) + (f" + {len(addrs) - 3} more..." if len(addrs) > 3 else "")
    return [obj["metadata"]["name"], obj.get("addressType", ""), ports, shown or "<unset>",
            age(obj["metadata"].get("creationTimestamp"))]


# --- nodes, namespaces, config ---------------------------------------------------------------------
def _node_row(obj: Obj) -> list[Any]:
    st, spec, md = obj.get("status") or {}, obj.get("spec") or {}, obj["metadata"]
    ready = "Unknown"
    for c in st.get("conditions") or []:
        if c.get("type") == "Ready":
            ready = "Ready" if c.get("status") == "True" else "NotReady"
    status = ready + (",SchedulingDisabled" if spec.get("unschedulable") else "")
    roles = sorted(k.split("/", 1)[1] for k in (md.get("labels") or {}) if k.startswith("node-role.kubernetes.io/"))
    info = st.get("nodeInfo") or {}
    addrs = {a.get("type"): a.get("address") for a in st.get("addresses") or []}
    return [md["name"], status, ",".join(roles) or "<none>", age(md.get("creationTimestamp")),
            info.get("kubeletVersion", ""), addrs.get("InternalIP", "<none>"), addrs.get("ExternalIP", "<none>"),
            info.get("osImage", "<unknown>"), info.get("kernelVersion", "<unknown>"),
            info.get("containerRuntimeVersion", "<unknown>")]


def validate_namespace(obj: Obj, old: Obj | None) -> list[Cause]:
    return validate_meta(obj, DNS1123_LABEL, LABEL_MSG)


def default_namespace(obj: Obj) -> None:
    md = obj.setdefault("metadata", {})
    if md.get("name"):
        md.setdefault("labels", {})["kubernetes.io/metadata.name"] = md["name"]
    obj.setdefault("spec", {}).setdefault("finalizers", ["kubernetes"])


def _secret_default(obj: Obj) -> None:
    obj.setdefault("type", "Opaque")
    # stringData is write-only: merged into data (its keys win) and never stored, as kube's conversion does
    sd = obj.pop("stringData", None)
    if isinstance(sd, dict) and sd:
        import base64

        data = obj.get("data") if isinstance(obj.get("data"), dict) else {}
        data.update({k: base64.b64encode(str(v).encode()).decode() for k, v in sd.items()})
        obj["data"] = data


def validate_secret(obj: Obj, old: Obj | None) -> list[Cause]:
    errs = validate_meta(obj)
    import base64
    import binascii
    for k, v in (obj.get("data") or {}).items():
        try:
            base64.b64decode(v, validate=True)
        except (binascii.Error, TypeError, ValueError):
            errs.invalid(f"data[{k}]", "<secret contents redacted>", "illegal base64 data")
    if old is not None and old.get("immutable") and (old.get("data") != obj.get("data")):
        errs.forbidden("data", "field is immutable when `immutable` is set")
    return errs


def validate_configmap(obj: Obj, old: Obj | None) -> list[Cause]:
    errs = validate_meta(obj)
    for k in list(obj.get("data") or {}) + list(obj.get("binaryData") or {}):
        if not re.fullmatch(r"[-._a-zA-Z0-9]+", k):
            errs.invalid("data", k, "a valid config key must consist of alphanumeric characters, '-', '_' or '.' "
                         "(e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is "
                         "'[-._a-zA-Z0-9]+')")
    if old is not None and old.get("immutable") and (old.get("data") != obj.get("data")):
        errs.forbidden("data", "field is immutable when `immutable` is set")
    return errs


def _event_row(obj: Obj) -> list[Any]:
    io = obj.get("involvedObject") or {}
    last = obj.get("lastTimestamp") or obj.get("eventTime") or obj["metadata"].get("creationTimestamp")
    return [age(last), obj.get("type", ""), obj.get("reason", ""), f"{(io.get('kind') or '').lower()}/{io.get('name', '')}",
            obj.get("message", ""), f"{(obj.get('source') or {}).get('component', '')}", obj.get("count", 1),
            age(obj.get("firstTimestamp") or last), age(last), obj["metadata"]["name"]]


def _event_fields(obj: Obj) -> dict[str, str]:
    io = obj.get("involvedObject") or {}
    out = {f"involvedObject.{k}": str(io.get(k) or "") for k in
           ("kind", "namespace", "name", "uid", "apiVersion", "resourceVersion", "fieldPath")}
    out.update({"reason": obj.get("reason") or "", "type": obj.get("type") or "",
                "source": (obj.get("source") or {}).get("component") or "",
                "reportingComponent": obj.get("reportingComponent") or ""})
    return out


def _hpa_row(obj: Obj) -> list[Any]:
    spec, st = obj.get("spec") or {}, obj.get("status") or {}
    ref = spec.get("scaleTargetRef") or {}
    targets = []
    cur = {(m.get("resource") or {}).get("name"): m for m in st.get("currentMetrics") or []}
    for m in spec.get("metrics") or []:
        if m.get("type") == "Resource":
            r = m.get("resource") or {}
            t = (r.get("target") or {}).get("averageUtilization")
            c = ((cur.get(r.get("name")) or {}).get("resource") or {}).get("current", {}).get("averageUtilization")
            targets.append(f"{r.get('name')}: {f'{c}%' if c is not None else '<unknown>'}/{t}%")
    return [obj["metadata"]["name"], f"{ref.get('kind')}/{ref.get('name')}", ", ".join(targets) or "<none>",
            spec.get("minReplicas", 1), spec.get("maxReplicas", 0), st.get("currentReplicas", 0),
            age(obj["metadata"].get("creationTimestamp"))]


def hpa_v1_to_v2(obj: Obj) -> Obj:
    out = {**obj, "apiVersion": "autoscaling/v2"}
    spec = dict(obj.get("spec") or {})
    pct = spec.pop("targetCPUUtilizationPercentage", None)
    metrics = []
    if pct is not None:
        metrics.append({"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization",
                                                                                    "averageUtilization": pct}}})
    ann = dict((obj.get("metadata") or {}).get("annotations") or {})
    extra = ann.pop("autoscaling.alpha.kubernetes.io/metrics", None)
    if extra:
        import json
        try:
            metrics.extend(json.loads(extra))
        except ValueError:
            pass
    if metrics:
        spec["metrics"] = metrics
    out["spec"] = spec
    st = dict(obj.get("status") or {})
    cur = st.pop("currentCPUUtilizationPercentage", None)
    if cur is not None:
        st["currentMetrics"] = [{"type": "Resource", "resource": {"name": "cpu", "current": {"averageUtilization": cur}}}]
    st.setdefault("desiredReplicas", st.get("desiredReplicas", 0))
    out["status"] = st
    return out


def hpa_v2_to_v1(obj: Obj) -> Obj:
    import json
    out = {**obj, "apiVersion": "autoscaling/v1"}
    spec = dict(obj.get("spec") or {})
    metrics = spec.pop("metrics", None) or []
    spec.pop("behavior", None)
    rest = []
    for m in metrics:
        r = m.get("resource") or {}
        if m.get("type") == "Resource" and r.get("name") == "cpu" and (r.get("target") or {}).get("type") == "Utilization" \
                and "targetCPUUtilizationPercentage" not in spec:
            spec["targetCPUUtilizationPercentage"] = r["target"].get("averageUtilization")
        else:
            rest.append(m)
    if rest:
        md = dict(obj.get("metadata") or {})
        md["annotations"] = {**(md.get("annotations") or {}), "autoscaling.alpha.kubernetes.io/metrics": json.dumps(rest)}
        out["metadata"] = md
    out["spec"] = spec
    st = dict(obj.get("status") or {})
    for m in st.pop("currentMetrics", None) or []:
        r = m.get("resource") or {}
        if m.get("type") == "Resource" and r.get("name") == "cpu":
            st["currentCPUUtilizationPercentage"] = (r.get("current") or {}).get("averageUtilization")
    st.pop("conditions", None)
    st.setdefault("currentReplicas", 0)
    st.setdefault("desiredReplicas", 0)
    out["status"] = st
    return out


def default_hpa_v2(obj: Obj) -> None:
    spec = obj.setdefault("spec", {})
    spec.setdefault("minReplicas", 1)
    if not spec.get("metrics"):
        spec["metrics"] = [{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization",
                                                                                        "averageUtilization": 80}}}]


def validate_hpa(obj: Obj, old: Obj | None) -> list[Cause]:
    errs = validate_meta(obj)
    spec = obj.get("spec") or {}
    ref = spec.get("scaleTargetRef") or {}
    if not ref.get("kind"):
        errs.required("spec.scaleTargetRef.kind")
    if not ref.get("name"):
        errs.required("spec.scaleTargetRef.name")
    mn, mx = spec.get("minReplicas", 1), spec.get("maxReplicas")
    if not isinstance(mx, int) or mx < 1:
        errs.invalid("spec.maxReplicas", mx, "must be greater than or equal to 1")
    if isinstance(mn, int) and mn < 1:
        errs.invalid("spec.minReplicas", mn, "must be greater than or equal to 1")
    if isinstance(mn, int) and isinstance(mx, int) and mx < mn:
        errs.invalid("spec.maxReplicas", mx, "must be greater than or equal to `minReplicas`")
    return errs


def _lease_row(obj: Obj) -> list[Any]:
    return [obj["metadata"]["name"], (obj.get("spec") or {}).get("holderIdentity") or "",
            age(obj["metadata"].get("creationTimestamp"))]


def _pv_row(obj: Obj) -> list[Any]:
    spec, st = obj.get("spec") or {}, obj.get("status") or {}
    ref = spec.get("claimRef") or {}
    modes = {"ReadWriteOnce": "RWO", "ReadOnlyMany": "ROX", "ReadWriteMany": "RWX", "ReadWriteOncePod": "RWOP"}
    return [obj["metadata"]["name"], (spec.get("capacity") or {}).get("storage", ""),
            ",".join(modes.get(m, m) for m in spec.get("accessModes") or []),
            spec.get("persistentVolumeReclaimPolicy", ""), st.get("phase", ""),
            f"{ref.get('namespace')}/{ref.get('name')}" if ref else "", spec.get("storageClassName", ""),
            "<unset>", st.get("reason", ""), age(obj["metadata"].get("creationTimestamp")),
            spec.get("volumeMode", "Filesystem")]


def _pvc_row(obj: Obj) -> list[Any]:
    spec, st = obj.get("spec") or {}, obj.get("status") or {}
    modes = {"ReadWriteOnce": "RWO", "ReadOnlyMany": "ROX", "ReadWriteMany": "RWX", "ReadWriteOncePod": "RWOP"}
    return [obj["metadata"]["name"], st.get("phase", ""), spec.get("volumeName", ""),
            (st.get("capacity") or {}).get("storage", ""),
            ",".join(modes.get(m, m) for m in st.get("accessModes") or []), spec.get("storageClassName") or "",
            "<unset>", age(obj["metadata"].get("creationTimestamp")), spec.get("volumeMode", "Filesystem")]


def _csr_row(obj: Obj) -> list[Any]:
    spec, st = obj.get("spec") or {}, obj.get("status") or {}
    conds = [c.get("type", "") for c in st.get("conditions") or [] if c.get("status", "True") == "True"]
    if st.get("certificate") and "Approved" in conds:
        conds.append("Issued")
    return [obj["metadata"]["name"], age(obj["metadata"].get("creationTimestamp")), spec.get("signerName", ""),
            spec.get("username", ""), ",".join(conds) or "Pending"]


# --- scheduling.k8s.io PriorityClass, apps ControllerRevision, policy PodDisruptionBudget ------------
HIGHEST_USER_PRIORITY = 1000000000
SYSTEM_PRIORITY_CLASSES: dict[str, tuple[int, str]] = {
    "system-node-critical": (2000001000, "Used for system critical pods that must not be moved from their current node."),
    "system-cluster-critical": (2000000000, "Used for system critical pods that must run in the cluster, but can be "
                                "moved to another node if necessary."),
}
PREEMPTION_POLICIES = ["Never", "PreemptLowerPriority"]


def default_priorityclass(obj: Obj) -> None:
    obj.setdefault("preemptionPolicy", "PreemptLowerPriority")


def validate_priorityclass(obj: Obj, old: Obj | None) -> list[Cause]:
    errs = validate_meta(obj)
    name = (obj.get("metadata") or {}).get("name") or ""
    value = obj.get("value", 0)
    if not isinstance(value, int) or isinstance(value, bool) or not -2147483648 <= value <= 2147483647:
        errs.invalid("value", value, "must be a 32-bit integer")
        return errs
    if name.startswith("system-"):
        if name not in SYSTEM_PRIORITY_CLASSES:
            errs.forbidden("metadata.name", "priority class names with 'system-' prefix are reserved")
        elif SYSTEM_PRIORITY_CLASSES[name][0] != value:
            errs.forbidden("value", f"value of {name} PriorityClass must be {SYSTEM_PRIORITY_CLASSES[name][0]}")
    elif value > HIGHEST_USER_PRIORITY:
        errs.forbidden("value", f"maximum allowed value of a user defined priority is {HIGHEST_USER_PRIORITY}")
    pp = obj.get("preemptionPolicy")
    if pp is not None and pp not in PREEMPTION_POLICIES:
        errs.unsupported("preemptionPolicy", pp, PREEMPTION_POLICIES)
    if old is not None:
        if old.get("value", 0) != value:
            errs.forbidden("value", "may not be changed in an update.")
        if old.get("preemptionPolicy") != pp:
            errs.invalid("preemptionPolicy", pp, "field is immutable")
    return errs


def _priorityclass_row(obj: Obj) -> list[Any]:
    return [obj["metadata"]["name"], obj.get("value", 0), bool(obj.get("globalDefault")),
            age(obj["metadata"].get("creationTimestamp")), obj.get("preemptionPolicy") or ""]


def validate_controllerrevision(obj: Obj, old: Obj | None) -> list[Cause]:
    errs = validate_meta(obj)
    errs.nonneg("revision", obj.get("revision", 0))
    if old is not None and old.get("data") != obj.get("data"):
        errs.invalid("data", "", "field is immutable")
    return errs


def _controllerrevision_row(obj: Obj) -> list[Any]:
    ctrl = "<none>"
    for ref in obj["metadata"].get("ownerReferences") or []:
        if ref.get("controller"):
            group = (ref.get("apiVersion") or "").split("/")[0] if "/" in (ref.get("apiVersion") or "") else ""
            kind = (ref.get("kind") or "").lower()
            ctrl = f"{kind}.{group}/{ref.get('name')}" if group else f"{kind}/{ref.get('name')}"
    return [obj["metadata"]["name"], ctrl, obj.get("revision", 0), age(obj["metadata"].get("creationTimestamp"))]


def _int_or_percent(errs: Errs, path: str, v: Any) -> None:
    if isinstance(v, bool):
        errs.invalid(path, v, "must be an integer or percentage (e.g '5%')")
    elif isinstance(v, int):
        errs.nonneg(path, v)
    elif isinstance(v, str):
        m = re.fullmatch(r"(\d+)%", v)
        if not m:
            errs.invalid(path, v, "a valid percent string must be a numeric string followed by an ending '%' "
                         "(e.g. '1%',  or '93%', regex used for validation is '[0-9]+%')")
        elif int(m.group(1)) > 100:
            errs.invalid(path, v, "must not be greater than 100%")
    else:
        errs.invalid(path, v, "must be an integer or percentage (e.g '5%')")


def validate_pdb(obj: Obj, old: Obj | None) -> list[Cause]:
    errs = validate_meta(obj)
    spec = obj.get("spec") or {}
    if not isinstance(spec, dict):
        errs.invalid("spec", spec, "must be an object")
        return errs
    mn, mx = spec.get("minAvailable"), spec.get("maxUnavailable")
    if mn is not None and mx is not None:
        errs.invalid("spec", spec, "minAvailable and maxUnavailable cannot be both set")
    if mn is not None:
        _int_or_percent(errs, "spec.minAvailable", mn)
    if mx is not None:
        _int_or_percent(errs, "spec.maxUnavailable", mx)
    pol = spec.get("unhealthyPodEvictionPolicy")
    if pol is not None and pol not in ("AlwaysAllow", "IfHealthyBudget"):
        errs.unsupported("spec.unhealthyPodEvictionPolicy", pol, ["AlwaysAllow", "IfHealthyBudget"])
    return errs


def _pdb_row(obj: Obj) -> list[Any]:
    spec, st = obj.get("spec") or {}, obj.get("status") or {}
    mn, mx = spec.get("minAvailable"), spec.get("maxUnavailable")
    return [obj["metadata"]["name"], "N/A" if mn is None else str(mn), "N/A" if mx is None else str(mx),
            st.get("disruptionsAllowed", 0), age(obj["metadata"].get("creationTimestamp"))]


def _name_age(obj: Obj) -> list[Any]:
    return [obj["metadata"]["name"], age(obj["metadata"].get("creationTimestamp"))]


C = Column
NAME = C("Name", format="name", description="Name must be unique within a namespace.")
AGE = C("Age", description="CreationTimestamp is a timestamp representing the server time when this object was created.")


def build_registry() -> Registry:
    r = Registry()
    status = {"status": None}
    del status

    def sub(group: str, version: str, kind: str, *names: str, verbs: list[str] | None = None) -> dict[str, Any]:
        return {n: ((group, version, kind), verbs or ["get", "patch", "update"]) for n in names}

    scale = {"scale": (("autoscaling", "v1", "Scale"), ["get", "patch", "update"])}
    # core/v1
    r.add(ResourceType("", "v1", "Namespace", "namespaces", False, short_names=["ns"],
                       verbs=["create", "delete", "get", "list", "patch", "update", "watch"],
                       subresources={**sub("", "v1", "Namespace", "status"),
                                     "finalize": (("", "v1", "Namespace"), ["update"])},
                       defaults=default_namespace, validate=validate_namespace,
                       columns=[NAME, C("Status"), AGE],
                       row=lambda o: [o["metadata"]["name"], (o.get("status") or {}).get("phase", ""),
                                      age(o["metadata"].get("creationTimestamp"))],
                       fields=lambda o: {"status.phase": (o.get("status") or {}).get("phase", "")},
                       field_names={"status.phase"}, schema_name="io.k8s.api.core.v1.Namespace"))
    r.add(ResourceType("", "v1", "Pod", "pods", True, short_names=["po"], categories=["all"],
                       subresources={**sub("", "v1", "Pod", "status"),
                                     "binding": (("", "v1", "Binding"), ["create"]),
                                     "eviction": (("policy", "v1", "Eviction"), ["create"]),
                                     "log": (("", "v1", "Pod"), ["get"]),
                                     "exec": (("", "v1", "PodExecOptions"), ["create", "get"]),
                                     "attach": (("", "v1", "PodAttachOptions"), ["create", "get"]),
                                     "portforward": (("", "v1", "PodPortForwardOptions"), ["create", "get"])},
                       defaults=default_pod, validate=validate_pod,
                       columns=[NAME, C("Ready"), C("Status"), C("Restarts", "string"), AGE, C("IP", priority=1),
                                C("Node", priority=1), C("Nominated Node", priority=1), C("Readiness Gates", priority=1)],
                       row=_pod_row, fields=_pod_fields,
                       field_names={"spec.nodeName", "status.phase", "spec.schedulerName", "spec.restartPolicy",
                                    "spec.serviceAccountName", "status.podIP", "status.nominatedNodeName",
                                    "spec.hostNetwork"},
                       schema_name="io.k8s.api.core.v1.Pod"))
    r.add(ResourceType("", "v1", "Service", "services", True, short_names=["svc"], categories=["all"],
                       subresources=sub("", "v1", "Service", "status"), defaults=default_service,
                       validate=validate_service,
                       columns=[NAME, C("Type"), C("Cluster-IP"), C("External-IP"), C("Port(s)"), AGE,
                                C("Selector", priority=1)],
                       row=_svc_row, schema_name="io.k8s.api.core.v1.Service"))
    r.add(ResourceType("", "v1", "Endpoints", "endpoints", True, short_names=["ep"], singular="endpoints",
                       validate=lambda o, old: validate_meta(o), reset_status_on_create=False,
                       columns=[NAME, C("Endpoints"), AGE], row=_endpoints_row,
                       schema_name="io.k8s.api.core.v1.Endpoints", list_kind="EndpointsList"))
    r.add(ResourceType("", "v1", "Node", "nodes", False, short_names=["no"], subresources=sub("", "v1", "Node", "status"),
                       validate=lambda o, old: validate_meta(o), reset_status_on_create=False,
                       columns=[NAME, C("Status"), C("Roles"), AGE, C("Version"), C("Internal-IP", priority=1),
                                C("External-IP", priority=1), C("OS-Image", priority=1),
                                C("Kernel-Version", priority=1), C("Container-Runtime", priority=1)],
                       row=_node_row,
                       fields=lambda o: {"spec.unschedulable": "true" if (o.get("spec") or {}).get("unschedulable") else "false"},
                       field_names={"spec.unschedulable"}, schema_name="io.k8s.api.core.v1.Node"))
    r.add(ResourceType("", "v1", "ConfigMap", "configmaps", True, short_names=["cm"], validate=validate_configmap,
                       columns=[NAME, C("Data", "integer"), AGE],
                       row=lambda o: [o["metadata"]["name"], len(o.get("data") or {}) + len(o.get("binaryData") or {}),
                                      age(o["metadata"].get("creationTimestamp"))],
                       schema_name="io.k8s.api.core.v1.ConfigMap"))
    r.add(ResourceType("", "v1", "Secret", "secrets", True, defaults=_secret_default, validate=validate_secret,
                       columns=[NAME, C("Type"), C("Data", "integer"), AGE],
                       row=lambda o: [o["metadata"]["name"], o.get("type", ""), len(o.get("data") or {}),
                                      age(o["metadata"].get("creationTimestamp"))],
                       fields=lambda o: {"type": o.get("type", "")}, field_names={"type"},
                       schema_name="io.k8s.api.core.v1.Secret"))
    r.add(ResourceType("", "v1", "ServiceAccount", "serviceaccounts", True, short_names=["sa"],
                       subresources={"token": (("authentication.k8s.io", "v1", "TokenRequest"), ["create"])},
                       validate=lambda o, old: validate_meta(o), columns=[NAME, C("Secrets", "integer"), AGE],
                       row=lambda o: [o["metadata"]["name"], len(o.get("secrets") or []),
                                      age(o["metadata"].get("creationTimestamp"))],
                       schema_name="io.k8s.api.core.v1.ServiceAccount"))
    r.add(ResourceType("", "v1", "PersistentVolume", "persistentvolumes", False, short_names=["pv"],
                       subresources=sub("", "v1", "PersistentVolume", "status"),
                       defaults=lambda o: (o.setdefault("spec", {}).setdefault("persistentVolumeReclaimPolicy", "Retain"),
                                           o["spec"].setdefault("volumeMode", "Filesystem"), None)[2],
                       validate=lambda o, old: validate_meta(o),
                       columns=[NAME, C("Capacity"), C("Access Modes"), C("Reclaim Policy"), C("Status"), C("Claim"),
                                C("StorageClass"), C("VolumeAttributesClass"), C("Reason"), AGE,
                                C("VolumeMode", priority=1)],
                       row=_pv_row, schema_name="io.k8s.api.core.v1.PersistentVolume"))
    r.add(ResourceType("", "v1", "PersistentVolumeClaim", "persistentvolumeclaims", True, short_names=["pvc"],
                       subresources=sub("", "v1", "PersistentVolumeClaim", "status"),
                       defaults=lambda o: (o.setdefault("spec", {}).setdefault("volumeMode", "Filesystem"), None)[1],
                       validate=lambda o, old: validate_meta(o),
                       columns=[NAME, C("Status"), C("Volume"), C("Capacity"), C("Access Modes"), C("StorageClass"),
                                C("VolumeAttributesClass"), AGE, C("VolumeMode", priority=1)],
                       row=_pvc_row, schema_name="io.k8s.api.core.v1.PersistentVolumeClaim"))
    r.add(ResourceType("", "v1", "Event", "events", True, short_names=["ev"], reset_status_on_create=False,
                       validate=lambda o, old: validate_meta(o),
                       columns=[C("Last Seen"), C("Type"), C("Reason"), C("Object"), C("Message"),
                                C("Source", priority=1), C("Count", "integer", priority=1),
                                C("First Seen", priority=1), C("Last Seen", priority=1), C("Name", priority=1)],
                       row=_event_row, fields=_event_fields,
                       field_names={"involvedObject.kind", "involvedObject.namespace", "involvedObject.name",
                                    "involvedObject.uid", "involvedObject.apiVersion", "involvedObject.resourceVersion",
                                    "involvedObject.fieldPath", "reason", "type", "source", "reportingComponent"},
                       schema_name="io.k8s.api.core.v1.Event"))
    # apps/v1
    tpl_cols = [C("Containers", priority=1), C("Images", priority=1), C("Selector", priority=1)]
    r.add(ResourceType("apps", "v1", "Deployment", "deployments", True, short_names=["deploy"], categories=["all"],
                       subresources={**sub("apps", "v1", "Deployment", "status"), **scale},
                       defaults=default_deployment, validate=validate_workload,
                       columns=[NAME, C("Ready"), C("Up-to-date", "integer"), C("Available", "integer"), AGE, *tpl_cols],
                       row=_deploy_row, schema_name="io.k8s.api.apps.v1.Deployment"))
    r.add(ResourceType("apps", "v1", "ReplicaSet", "replicasets", True, short_names=["rs"], categories=["all"],
                       subresources={**sub("apps", "v1", "ReplicaSet", "status"), **scale},
                       defaults=default_replicaset, validate=validate_workload,
                       columns=[NAME, C("Desired", "integer"), C("Current", "integer"), C("Ready", "integer"), AGE,
                                *tpl_cols],
                       row=_rs_row,
                       fields=lambda o: {"status.replicas": str((o.get("status") or {}).get("replicas", 0))},
                       field_names={"status.replicas"}, schema_name="io.k8s.api.apps.v1.ReplicaSet"))
    r.add(ResourceType("apps", "v1", "StatefulSet", "statefulsets", True, short_names=["sts"], categories=["all"],
                       subresources={**sub("apps", "v1", "StatefulSet", "status"), **scale},
                       defaults=default_statefulset, validate=validate_workload,
                       columns=[NAME, C("Ready"), AGE, C("Containers", priority=1), C("Images", priority=1)],
                       row=_sts_row, schema_name="io.k8s.api.apps.v1.StatefulSet"))
    r.add(ResourceType("apps", "v1", "DaemonSet", "daemonsets", True, short_names=["ds"], categories=["all"],
                       subresources=sub("apps", "v1", "DaemonSet", "status"),
                       defaults=default_daemonset, validate=lambda o, old: validate_workload(o, old, replicas=False),
                       columns=[NAME, C("Desired", "integer"), C("Current", "integer"), C("Ready", "integer"),
                                C("Up-to-date", "integer"), C("Available", "integer"), C("Node Selector"), AGE,
                                *tpl_cols],
                       row=_ds_row, schema_name="io.k8s.api.apps.v1.DaemonSet"))
    # batch/v1
    r.add(ResourceType("batch", "v1", "Job", "jobs", True, categories=["all"],
                       subresources=sub("batch", "v1", "Job", "status"), defaults=default_job,
                       validate=lambda o, old: validate_workload(o, old, needs_selector=False, replicas=False),
                       columns=[NAME, C("Status"), C("Completions"), C("Duration"), AGE, *tpl_cols],
                       row=_job_row,
                       fields=lambda o: {"status.successful": str((o.get("status") or {}).get("succeeded", 0))},
                       field_names={"status.successful"}, schema_name="io.k8s.api.batch.v1.Job"))
    r.add(ResourceType("batch", "v1", "CronJob", "cronjobs", True, short_names=["cj"], categories=["all"],
                       subresources=sub("batch", "v1", "CronJob", "status"), defaults=default_cronjob,
                       validate=validate_cronjob,
                       columns=[NAME, C("Schedule"), C("Timezone"), C("Suspend"), C("Active", "integer"),
                                C("Last Schedule"), AGE, *tpl_cols],
                       row=_cronjob_row, schema_name="io.k8s.api.batch.v1.CronJob"))
    # autoscaling: v2 is the storage version; v1 converts
    hpa_cols = [NAME, C("Reference"), C("Targets"), C("MinPods", "integer"), C("MaxPods", "integer"),
                C("Replicas", "integer"), AGE]
    r.add(ResourceType("autoscaling", "v2", "HorizontalPodAutoscaler", "horizontalpodautoscalers", True,
                       short_names=["hpa"], categories=["all"],
                       subresources=sub("autoscaling", "v2", "HorizontalPodAutoscaler", "status"),
                       defaults=default_hpa_v2, validate=validate_hpa, columns=hpa_cols, row=_hpa_row,
                       schema_name="io.k8s.api.autoscaling.v2.HorizontalPodAutoscaler"))
    r.add(ResourceType("autoscaling", "v1", "HorizontalPodAutoscaler", "horizontalpodautoscalers", True,
                       short_names=["hpa"], categories=["all"], preferred=False,
                       subresources=sub("autoscaling", "v1", "HorizontalPodAutoscaler", "status"),
                       to_storage=hpa_v1_to_v2, from_storage=hpa_v2_to_v1,
                       defaults=default_hpa_v2, validate=validate_hpa, columns=hpa_cols, row=_hpa_row,
                       schema_name="io.k8s.api.autoscaling.v1.HorizontalPodAutoscaler"))
    # discovery, coordination, storage
    r.add(ResourceType("discovery.k8s.io", "v1", "EndpointSlice", "endpointslices", True,
                       validate=lambda o, old: validate_meta(o), reset_status_on_create=False,
                       columns=[NAME, C("AddressType"), C("Ports"), C("Endpoints"), AGE], row=_slice_row,
                       schema_name="io.k8s.api.discovery.v1.EndpointSlice"))
    r.add(ResourceType("coordination.k8s.io", "v1", "Lease", "leases", True, validate=lambda o, old: validate_meta(o),
                       columns=[NAME, C("Holder"), AGE], row=_lease_row, reset_status_on_create=False,
                       schema_name="io.k8s.api.coordination.v1.Lease"))
    r.add(ResourceType("storage.k8s.io", "v1", "StorageClass", "storageclasses", False, short_names=["sc"],
                       defaults=lambda o: (o.setdefault("reclaimPolicy", "Delete"),
                                           o.setdefault("volumeBindingMode", "Immediate"), None)[2],
                       validate=lambda o, old: validate_meta(o),
                       columns=[NAME, C("Provisioner"), C("ReclaimPolicy"), C("VolumeBindingMode"),
                                C("AllowVolumeExpansion"), AGE],
                       row=lambda o: [o["metadata"]["name"], o.get("provisioner", ""), o.get("reclaimPolicy", ""),
                                      o.get("volumeBindingMode", ""), str(bool(o.get("allowVolumeExpansion"))).lower(),
                                      age(o["metadata"].get("creationTimestamp"))],
                       schema_name="io.k8s.api.storage.v1.StorageClass"))
    # scheduling.k8s.io/v1, apps/v1 controllerrevisions, policy/v1
    r.add(ResourceType("scheduling.k8s.io", "v1", "PriorityClass", "priorityclasses", False, short_names=["pc"],
                       defaults=default_priorityclass, validate=validate_priorityclass,
                       columns=[NAME, C("Value", "integer"), C("Global-Default", "boolean"), AGE,
                                C("PreemptionPolicy")],
                       row=_priorityclass_row, schema_name="io.k8s.api.scheduling.v1.PriorityClass"))
    r.add(ResourceType("apps", "v1", "ControllerRevision", "controllerrevisions", True,
                       validate=validate_controllerrevision, reset_status_on_create=False,
                       columns=[NAME, C("Controller"), C("Revision", "integer"), AGE],
                       row=_controllerrevision_row, schema_name="io.k8s.api.apps.v1.ControllerRevision"))
    r.add(ResourceType("policy", "v1", "PodDisruptionBudget", "poddisruptionbudgets", True, short_names=["pdb"],
                       subresources=sub("policy", "v1", "PodDisruptionBudget", "status"), validate=validate_pdb,
                       columns=[NAME, C("Min Available"), C("Max Unavailable"), C("Allowed Disruptions", "integer"),
                                AGE],
                       row=_pdb_row, schema_name="io.k8s.api.policy.v1.PodDisruptionBudget"))
    # certificates.k8s.io/v1: node serving certificates are requested here and signed by the
    # controller manager's csrsigning controller (nodes area, controllers/certificates.py)
    r.add(ResourceType("certificates.k8s.io", "v1", "CertificateSigningRequest", "certificatesigningrequests", False,
                       short_names=["csr"],
                       subresources={**sub("certificates.k8s.io", "v1", "CertificateSigningRequest", "status"),
                                     **sub("certificates.k8s.io", "v1", "CertificateSigningRequest", "approval")},
                       validate=lambda o, old: validate_meta(o), columns=[NAME, AGE, C("SignerName"),
                                                                          C("Requestor"), C("Condition")],
                       row=_csr_row, schema_name="io.k8s.api.certificates.v1.CertificateSigningRequest"))
    for rt in r.by_gvr.values():
        if not rt.columns:
            rt.columns = [NAME, AGE]
            rt.row = _name_age
    return r


REGISTRY = build_registry()
