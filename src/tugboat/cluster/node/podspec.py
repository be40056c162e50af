"""Pure translation of a Pod's spec into what the runtime needs: env, command, resources, probes.

No I/O here: the worker fetches the ConfigMaps/Secrets a pod refers to and passes them in.
Errors a user must fix raise :class:`ConfigError` (reported as ``CreateContainerConfigError``).
"""

from __future__ import annotations

import base64
import math
import re
from collections.abc import Mapping
from typing import Any

from tugboat.cluster.client.util import quantity

_REF = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


class ConfigError(Exception):
    """A container's configuration refers to something missing (kube: CreateContainerConfigError)."""


def expand(s: str, env: Mapping[str, str]) -> str:
    """Kubernetes' ``$(VAR)`` expansion: defined references are replaced, ``$$`` escapes ``$``,
    undefined references are kept as written."""

    def sub(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        name = m.group(1)
        return env[name] if name in env else m.group(0)

    return _REF.sub(sub, s)


def field_ref(pod: dict[str, Any], path: str) -> str:
    md = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    st = pod.get("status") or {}
    m = re.fullmatch(r"metadata\.(labels|annotations)\['([^']+)'\]", path)
    if m:
        return str((md.get(m.group(1)) or {}).get(m.group(2), ""))
    simple = {
        "metadata.name": md.get("name"), "metadata.namespace": md.get("namespace"), "metadata.uid": md.get("uid"),
        "spec.nodeName": spec.get("nodeName"), "spec.serviceAccountName": spec.get("serviceAccountName"),
        "status.hostIP": st.get("hostIP"), "status.podIP": st.get("podIP"),
        "status.hostIPs": ",".join(i.get("ip", "") for i in st.get("hostIPs") or []),
        "status.podIPs": ",".join(i.get("ip", "") for i in st.get("podIPs") or []),
    }
    if path in simple:
        return str(simple[path] or "")
    if path in ("metadata.labels", "metadata.annotations"):
        d = md.get(path.split(".")[1]) or {}
        return "\n".join(f'{k}="{v}"' for k, v in sorted(d.items()))
    raise ConfigError(f"unsupported fieldRef {path!r}")


def resource_ref(container: dict[str, Any], ref: dict[str, Any], node_allocatable: Mapping[str, str]) -> str:
    res = ref.get("resource", "")
    kind, _, name = res.partition(".")
    r = container.get("resources") or {}
    val = (r.get(kind) or {}).get(name)
    if val is None and kind == "requests":
        val = (r.get("limits") or {}).get(name)
    if val is None:
        val = node_allocatable.get(name, "0")
    divisor = quantity(ref.get("divisor") or "1")
    if divisor == 0:
        divisor = quantity("1")
    return str(math.ceil(quantity(val) / divisor))


def _cm_value(objs: Mapping[str, dict | None], kind: str, name: str, key: str, optional: bool) -> str | None:
    obj = objs.get(name)
    if obj is None:
        if optional:
            return None
        raise ConfigError(f'{kind} "{name}" not found')
    data = obj.get("data") or {}
    if key in data:
        v = data[key]
        return base64.b64decode(v).decode(errors="replace") if kind == "secret" else str(v)
    if kind == "configmap" and key in (obj.get("binaryData") or {}):
        return base64.b64decode(obj["binaryData"][key]).decode(errors="replace")
    if optional:
        return None
    raise ConfigError(f"couldn't find key {key} in {'Secret' if kind == 'secret' else 'ConfigMap'} "
                      f"{(obj.get('metadata') or {}).get('namespace', '')}/{name}")


def referenced_objects(spec: dict[str, Any]) -> tuple[set[str], set[str]]:
    """Names of the ConfigMaps and Secrets the pod's containers and volumes refer to."""
    cms: set[str] = set()
    secrets: set[str] = set()
    for c in [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]:
        for e in c.get("env") or []:
            vf = e.get("valueFrom") or {}
            if vf.get("configMapKeyRef"):
                cms.add(vf["configMapKeyRef"]["name"])
            if vf.get("secretKeyRef"):
                secrets.add(vf["secretKeyRef"]["name"])
        for ef in c.get("envFrom") or []:
            if ef.get("configMapRef"):
                cms.add(ef["configMapRef"]["name"])
            if ef.get("secretRef"):
                secrets.add(ef["secretRef"]["name"])
    for v in spec.get("volumes") or []:
        if v.get("configMap"):
            cms.add(v["configMap"]["name"])
        if v.get("secret"):
            secrets.add(v["secret"]["secretName"])
        for src in (v.get("projected") or {}).get("sources") or []:
            if src.get("configMap"):
                cms.add(src["configMap"]["name"])
            if src.get("secret"):
                secrets.add(src["secret"]["name"])
    return cms, secrets


def container_env(pod: dict[str, Any], container: dict[str, Any], *, configmaps: Mapping[str, dict | None],
                  secrets: Mapping[str, dict | None], node_allocatable: Mapping[str, str] | None = None,
                  service_env: Mapping[str, str] | None = None) -> list[str]:
    """The container's environment as ``NAME=value`` strings, in kube's order and precedence:
    service links, then envFrom (in order), then env (later wins; ``$(VAR)`` expanded)."""
    env: dict[str, str] = dict(service_env or {})
    for ef in container.get("envFrom") or []:
        prefix = ef.get("prefix") or ""
        if ef.get("configMapRef"):
            ref = ef["configMapRef"]
            obj = configmaps.get(ref["name"])
            if obj is None:
                if ref.get("optional"):
                    continue
                raise ConfigError(f'configmap "{ref["name"]}" not found')
            for k, v in (obj.get("data") or {}).items():
                env[prefix + k] = str(v)
        if ef.get("secretRef"):
            ref = ef["secretRef"]
            obj = secrets.get(ref["name"])
            if obj is None:
                if ref.get("optional"):
                    continue
                raise ConfigError(f'secret "{ref["name"]}" not found')
            for k, v in (obj.get("data") or {}).items():
                env[prefix + k] = base64.b64decode(v).decode(errors="replace")
    for e in container.get("env") or []:
        name = e["name"]
        if "valueFrom" not in e:
            env[name] = expand(str(e.get("value") or ""), env)
            continue
        vf = e["valueFrom"] or {}
        val: str | None
        if vf.get("fieldRef"):
            val = field_ref(pod, vf["fieldRef"]["fieldPath"])
        elif vf.get("resourceFieldRef"):
            ref = vf["resourceFieldRef"]
            target = container
            if ref.get("containerName"):
                target = next((c for c in (pod.get("spec") or {}).get("containers") or []
                               if c.get("name") == ref["containerName"]), container)
            val = resource_ref(target, ref, node_allocatable or {})
        elif vf.get("configMapKeyRef"):
            r = vf["configMapKeyRef"]
            val = _cm_value(configmaps, "configmap", r["name"], r["key"], bool(r.get("optional")))
        elif vf.get("secretKeyRef"):
            r = vf["secretKeyRef"]
            val = _cm_value(secrets, "secret", r["name"], r["key"], bool(r.get("optional")))
        else:
            val = ""
        if val is not None:
            env[name] = val
    return [f"{k}={v}" for k, v in env.items()]


def command_args(container: dict[str, Any], env_list: list[str]) -> tuple[list[str] | None, list[str] | None]:
    env = dict(e.split("=", 1) for e in env_list)
    cmd = container.get("command")
    args = container.get("args")
    return ([expand(x, env) for x in cmd] if cmd is not None else None,
            [expand(x, env) for x in args] if args is not None else None)


def resources(container: dict[str, Any]) -> dict[str, int]:
    """cgroup settings from requests/limits: memory limit (bytes), cpu quota (µs per 100 ms), cpu shares."""
    r = container.get("resources") or {}
    lim, req = r.get("limits") or {}, r.get("requests") or {}
    out: dict[str, int] = {}
    if lim.get("memory"):
        out["memory_limit"] = int(quantity(lim["memory"]))
    if lim.get("cpu"):
        out["cpu_quota"] = max(1000, int(quantity(lim["cpu"]) * 100000))
    cpu_req = req.get("cpu") or lim.get("cpu")
    out["cpu_shares"] = max(2, int(quantity(cpu_req) * 1024)) if cpu_req else 2
    return out


def qos_class(spec: dict[str, Any]) -> str:
    cs = [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]
    if not any((c.get("resources") or {}).get("requests") or (c.get("resources") or {}).get("limits") for c in cs):
        return "BestEffort"
    for c in cs:
        r = c.get("resources") or {}
        lim, req = r.get("limits") or {}, r.get("requests") or {}
        for k in ("cpu", "memory"):
            if not lim.get(k) or quantity(req.get(k, lim[k])) != quantity(lim[k]):
                return "Burstable"
    return "Guaranteed"


def user_of(pod_sc: dict[str, Any], sc: dict[str, Any]) -> str | None:
    uid = sc.get("runAsUser", pod_sc.get("runAsUser"))
    gid = sc.get("runAsGroup", pod_sc.get("runAsGroup"))
    if uid is None and gid is None:
        return None
    if uid is None:
        uid = 0
    return f"{uid}:{gid}" if gid is not None else str(uid)


def validate_probe(probe: dict[str, Any] | None) -> str | None:
    """A message when the probe cannot be run, else None."""
    if not probe:
        return None
    kinds = [k for k in ("exec", "httpGet", "tcpSocket", "grpc") if probe.get(k)]
    if len(kinds) != 1:
        return "must specify exactly one handler type (exec, httpGet, tcpSocket or grpc)"
    if kinds[0] == "exec" and not (probe["exec"].get("command")):
        return "exec.command: Required value"
    return None
