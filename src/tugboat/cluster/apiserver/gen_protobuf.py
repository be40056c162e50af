"""Development tool: regenerate ``protobuf.json``, the wire-format table (message -> field number ->
name, type, label) of the kinds kubectl 1.32 sends as protobuf (``create deployment|configmap|
namespace|secret|service|serviceaccount|job|cronjob|priorityclass|poddisruptionbudget``, ``autoscale``,
``create token``).

Run ``python -m tugboat.cluster.apiserver.gen_protobuf API_REPO APIMACHINERY_REPO`` with two
checkouts (or bare git directories) of kubernetes/api and kubernetes/apimachinery; it reads their
``generated.proto`` files (field names and numbers only) and writes the table next to this file.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

API_FILES = ["core/v1/generated.proto", "apps/v1/generated.proto", "autoscaling/v1/generated.proto",
             "autoscaling/v2/generated.proto", "batch/v1/generated.proto", "policy/v1/generated.proto",
             "scheduling/v1/generated.proto", "authentication/v1/generated.proto"]
MACHINERY_FILES = ["pkg/apis/meta/v1/generated.proto", "pkg/api/resource/generated.proto",
                   "pkg/util/intstr/generated.proto", "pkg/runtime/generated.proto"]
ROOTS = ["k8s.io.api.core.v1.Namespace", "k8s.io.api.core.v1.ConfigMap", "k8s.io.api.core.v1.Secret",
         "k8s.io.api.core.v1.Service", "k8s.io.api.core.v1.ServiceAccount", "k8s.io.api.core.v1.Pod",
         "k8s.io.api.apps.v1.Deployment", "k8s.io.api.batch.v1.Job", "k8s.io.api.batch.v1.CronJob",
         "k8s.io.api.autoscaling.v1.HorizontalPodAutoscaler", "k8s.io.api.autoscaling.v2.HorizontalPodAutoscaler",
         "k8s.io.api.policy.v1.PodDisruptionBudget", "k8s.io.api.scheduling.v1.PriorityClass",
         "k8s.io.api.authentication.v1.TokenRequest",
         "k8s.io.apimachinery.pkg.runtime.Unknown"]
SCALARS = {"string", "int32", "int64", "bool", "bytes", "double", "float", "uint32", "uint64", "sint32", "sint64",
           "fixed32", "fixed64"}
FIELD = re.compile(r"^\s*(optional|repeated)?\s*(map<\s*[\w.]+\s*,\s*[\w.]+\s*>|[\w.]+)\s+(\w+)\s*=\s*(\d+)\s*;")


def _read(repo: str, path: str) -> str:
    full = os.path.join(repo, path)
    if os.path.exists(full):
        with open(full) as f:
            return f.read()
    return subprocess.run(["git", "--git-dir", repo, "show", f"HEAD:{path}"], capture_output=True, text=True,
                          check=True).stdout


def _parse(text: str, msgs: dict[str, dict[str, list[str]]]) -> None:
    pkg = re.search(r"^package\s+([\w.]+);", text, re.M)
    assert pkg
    package = pkg.group(1)
    cur: str | None = None
    depth = 0

    def resolve(t: str) -> str:
        if t in SCALARS:
            return t
        if t.startswith("."):
            return t[1:]
        return f"{package}.{t}"

    for line in text.splitlines():
        s = line.split("//", 1)[0]
        m = re.match(r"^\s*message\s+(\w+)\s*\{", s)
        if m and depth == 0:
            cur = f"{package}.{m.group(1)}"
            msgs[cur] = {}
            depth = 1
            continue
        if cur is None:
            continue
        depth += s.count("{") - s.count("}")
        if depth <= 0:
            cur = None
            depth = 0
            continue
        f = FIELD.match(s)
        if f and depth == 1:
            label, typ, name, num = f.groups()
            if typ.startswith("map<"):
                k, v = [x.strip() for x in typ[4:-1].split(",")]
                msgs[cur][num] = [name, f"{resolve(k)},{resolve(v)}", "map"]
            else:
                msgs[cur][num] = [name, resolve(typ), label or ""]


def main() -> None:
    api, machinery = sys.argv[1], sys.argv[2]
    msgs: dict[str, dict[str, list[str]]] = {}
    for p in API_FILES:
        _parse(_read(api, p), msgs)
    for p in MACHINERY_FILES:
        _parse(_read(machinery, p), msgs)
    keep: dict[str, dict[str, list[str]]] = {}

    def walk(name: str) -> None:
        if name in keep or name not in msgs:
            return
        keep[name] = msgs[name]
        for _, typ, label in msgs[name].values():
            for t in typ.split(",") if label == "map" else [typ]:
                if t not in SCALARS:
                    walk(t)

    for r in ROOTS:
        walk(r)
    out = os.path.join(os.path.dirname(__file__), "protobuf.json")
    with open(out + ".tmp", "w") as f:
        json.dump(keep, f, separators=(",", ":"), sort_keys=True)
    os.replace(out + ".tmp", out)
    print(f"wrote {len(keep)} messages to {out}")


if __name__ == "__main__":
    main()
