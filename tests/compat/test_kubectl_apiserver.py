"""The real kubectl against our API server, on SQLite and on etcd."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import apiserver_fixtures
import yaml
from apiserver_fixtures import Cluster, write

cluster = apiserver_fixtures.cluster  # the fixture, parametrised over sqlite and etcd

MANIFEST = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  labels: {app: web}
spec:
  replicas: 2
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: nginx
        image: nginx:1.25
        ports:
        - containerPort: 80
---
apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  selector: {app: web}
  ports:
  - port: 80
    targetPort: 80
---
apiVersion: v1
kind: Service
metadata:
  name: web-nodeport
spec:
  type: NodePort
  selector: {app: web}
  ports:
  - port: 8080
    targetPort: 80
"""


def test_version_and_discovery(cluster: Cluster) -> None:
    out = cluster.kubectl("version", "-o", "json").stdout
    v = json.loads(out)
    assert v["serverVersion"]["major"] == "1" and v["serverVersion"]["minor"] == "32"
    res = cluster.kubectl("api-resources").stdout
    for line in ("deployments", "deploy", "horizontalpodautoscalers", "leases", "endpointslices", "storageclasses"):
        assert line in res
    assert "metrics.k8s.io/v1beta1" in cluster.kubectl("api-versions").stdout
    pods = cluster.kubectl("api-resources", "--api-group=", "-o", "name").stdout.split()
    assert "pods" in pods and "namespaces" in pods
    who = cluster.kubectl("auth", "whoami").stdout
    assert "admin" in who and "system:masters" in who
    # the bearer-token kubeconfig authenticates as the same user
    who = cluster.kubectl("auth", "whoami", "--kubeconfig", cluster.api.token_kubeconfig).stdout
    assert "admin" in who


def test_explain(cluster: Cluster) -> None:
    out = cluster.kubectl("explain", "deployment.spec.replicas").stdout
    assert "KIND:       Deployment" in out and "replicas" in out and "<integer>" in out
    out = cluster.kubectl("explain", "pods.spec.containers").stdout
    assert "FIELDS:" in out and "image" in out and "imagePullPolicy" in out


def test_apply_unchanged_changed(cluster: Cluster, tmp_path: Path) -> None:
    f = write(tmp_path / "app.yaml", MANIFEST)
    out = cluster.kubectl("apply", "-f", f).stdout
    assert "deployment.apps/web created" in out
    assert "service/web created" in out and "service/web-nodeport created" in out
    out = cluster.kubectl("apply", "-f", f).stdout
    assert out.count("unchanged") == 3, out
    write(tmp_path / "app.yaml", MANIFEST.replace("replicas: 2", "replicas: 4").replace("nginx:1.25", "nginx:1.27"))
    out = cluster.kubectl("apply", "-f", f).stdout
    assert "deployment.apps/web configured" in out and "service/web unchanged" in out
    d = json.loads(cluster.kubectl("get", "deploy", "web", "-o", "json").stdout)
    assert d["spec"]["replicas"] == 4
    assert d["spec"]["template"]["spec"]["containers"][0]["image"] == "nginx:1.27"
    assert d["metadata"]["generation"] == 2
    svc = json.loads(cluster.kubectl("get", "svc", "web-nodeport", "-o", "json").stdout)
    assert 30000 <= svc["spec"]["ports"][0]["nodePort"] <= 32767
    assert svc["spec"]["clusterIP"].startswith("10.")
    wide = cluster.kubectl("get", "svc", "-o", "wide").stdout
    assert "SELECTOR" in wide and "app=web" in wide
    # a server-side-invalid change is refused with the causes kubectl prints
    bad = MANIFEST.replace("replicas: 2", "replicas: -1")
    r = cluster.kubectl("apply", "-f", write(tmp_path / "bad.yaml", bad), check=False)
    assert r.returncode != 0 and "spec.replicas: Invalid value: -1: must be greater than or equal to 0" in r.stderr
    # unknown fields are refused (kubectl sends fieldValidation=Strict)
    r = cluster.kubectl("apply", "-f", write(tmp_path / "unk.yaml", MANIFEST.replace("replicas: 2", "replicas: 2\n  replicaz: 3")),
                        check=False)
    assert r.returncode != 0 and 'unknown field "spec.replicaz"' in r.stderr
    cluster.kubectl("delete", "-f", f)


def test_create_generators_and_get(cluster: Cluster) -> None:
    cluster.kubectl("create", "namespace", "team-a")
    assert "deployment.apps/gen created" in cluster.kubectl("create", "deployment", "gen", "--image=busybox",
                                                           "-n", "team-a", "--replicas=2").stdout
    cluster.kubectl("create", "configmap", "cfg", "--from-literal=a=1", "--from-literal=b=2", "-n", "team-a")
    cluster.kubectl("create", "secret", "generic", "sec", "--from-literal=pw=hunter2", "-n", "team-a")
    out = cluster.kubectl("get", "cm", "cfg", "-n", "team-a").stdout
    assert out.split("\n")[0].split() == ["NAME", "DATA", "AGE"] and out.split("\n")[1].split()[:2] == ["cfg", "2"]
    out = cluster.kubectl("get", "deploy", "-n", "team-a", "-o", "wide").stdout
    header = out.split("\n")[0].split()
    assert header[:5] == ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"] and "IMAGES" in header
    assert "0/2" in out and "busybox" in out and "app=gen" in out
    y = yaml.safe_load(cluster.kubectl("get", "secret", "sec", "-n", "team-a", "-o", "yaml").stdout)
    assert y["data"]["pw"] == "aHVudGVyMg==" and y["type"] == "Opaque"
    jp = cluster.kubectl("get", "deploy", "gen", "-n", "team-a", "-o", "jsonpath={.spec.template.spec.containers[0].image}")
    assert jp.stdout == "busybox"
    all_ns = cluster.kubectl("get", "deploy", "-A").stdout
    assert all_ns.split("\n")[0].split()[0] == "NAMESPACE" and "team-a" in all_ns
    cluster.kubectl("label", "deploy", "gen", "tier=backend", "-n", "team-a")
    assert "gen" in cluster.kubectl("get", "deploy", "-A", "-l", "tier=backend").stdout
    r = cluster.kubectl("get", "deploy", "-A", "-l", "tier=frontend")
    assert "No resources found" in r.stderr
    # the namespace must exist
    r = cluster.kubectl("create", "configmap", "x", "-n", "nope", check=False)
    assert r.returncode != 0 and 'namespaces "nope" not found' in r.stderr
    # every namespace gets a default service account
    deadline = time.time() + 5
    while "default" not in cluster.kubectl("get", "sa", "-n", "team-a", check=False).stdout:
        assert time.time() < deadline
        time.sleep(0.1)
    # pods get defaults and the default service account
    cluster.kubectl("run", "p1", "--image=busybox:1.36", "-n", "team-a", "--labels=app=p1")
    pod = json.loads(cluster.kubectl("get", "pod", "p1", "-n", "team-a", "-o", "json").stdout)
    assert pod["spec"]["serviceAccountName"] == "default" and pod["status"]["phase"] == "Pending"
    assert pod["spec"]["containers"][0]["imagePullPolicy"] == "IfNotPresent"
    out = cluster.kubectl("get", "pods", "-n", "team-a", "-o", "wide").stdout
    assert out.split("\n")[0].split()[:7] == ["NAME", "READY", "STATUS", "RESTARTS", "AGE", "IP", "NODE"]
    assert "0/1" in out and "Pending" in out
    assert 'pod "p1" deleted' in cluster.kubectl("delete", "pod", "p1", "-n", "team-a").stdout


def test_describe(cluster: Cluster) -> None:
    cluster.kubectl("create", "deployment", "desc", "--image=nginx:1.27")
    out = cluster.kubectl("describe", "deployment", "desc").stdout
    assert "Name:                   desc" in out and "nginx:1.27" in out and "RollingUpdate" in out
    cluster.kubectl("run", "dpod", "--image=nginx")
    out = cluster.kubectl("describe", "pod", "dpod").stdout
    assert "Status:           Pending" in out and "QoS Class:" in out
    cluster.kubectl("delete", "pod", "dpod")
    cluster.kubectl("delete", "deployment", "desc")


def test_edit_label_annotate_patch_scale_set_image(cluster: Cluster, tmp_path: Path) -> None:
    cluster.kubectl("create", "deployment", "ed", "--image=nginx:1.25")
    editor = tmp_path / "editor.sh"
    editor.write_text("#!/bin/sh\nsed -i 's/replicas: 1/replicas: 3/' \"$1\"\n")
    editor.chmod(0o755)
    out = cluster.kubectl("edit", "deployment", "ed", env={"KUBE_EDITOR": str(editor), "EDITOR": str(editor)}).stdout
    assert "deployment.apps/ed edited" in out
    assert cluster.kubectl("get", "deploy", "ed", "-o", "jsonpath={.spec.replicas}").stdout == "3"
    assert "labeled" in cluster.kubectl("label", "deploy", "ed", "team=blue").stdout
    assert "annotated" in cluster.kubectl("annotate", "deploy", "ed", "owner=me").stdout
    r = cluster.kubectl("label", "deploy", "ed", "team=red", check=False)
    assert r.returncode != 0 and "already has a value" in r.stderr
    cluster.kubectl("label", "deploy", "ed", "team=red", "--overwrite")
    cluster.kubectl("label", "deploy", "ed", "team-")
    d = json.loads(cluster.kubectl("get", "deploy", "ed", "-o", "json").stdout)
    assert "team" not in d["metadata"]["labels"] and d["metadata"]["annotations"]["owner"] == "me"
    # strategic merge: the containers list merges by name
    cluster.kubectl("patch", "deploy", "ed", "-p",
                    '{"spec":{"template":{"spec":{"containers":[{"name":"nginx","env":[{"name":"A","value":"1"}]}]}}}}')
    d = json.loads(cluster.kubectl("get", "deploy", "ed", "-o", "json").stdout)
    c = d["spec"]["template"]["spec"]["containers"]
    assert len(c) == 1 and c[0]["image"] == "nginx:1.25" and c[0]["env"] == [{"name": "A", "value": "1"}]
    cluster.kubectl("patch", "deploy", "ed", "--type=merge", "-p", '{"spec":{"replicas":5}}')
    assert cluster.kubectl("get", "deploy", "ed", "-o", "jsonpath={.spec.replicas}").stdout == "5"
    cluster.kubectl("patch", "deploy", "ed", "--type=json", "-p", '[{"op":"replace","path":"/spec/replicas","value":2}]')
    assert cluster.kubectl("get", "deploy", "ed", "-o", "jsonpath={.spec.replicas}").stdout == "2"
    out = cluster.kubectl("patch", "deploy", "ed", "--type=merge", "-p", '{"spec":{"replicas":2}}').stdout
    assert "(no change)" in out
    r = cluster.kubectl("patch", "deploy", "ed", "--type=json", "-p", '[{"op":"test","path":"/spec/replicas","value":9}]',
                        check=False)
    assert r.returncode != 0
    assert "scaled" in cluster.kubectl("scale", "deploy", "ed", "--replicas=7").stdout
    assert cluster.kubectl("get", "deploy", "ed", "-o", "jsonpath={.spec.replicas}").stdout == "7"
    assert "image updated" in cluster.kubectl("set", "image", "deploy/ed", "nginx=nginx:1.27").stdout
    d = json.loads(cluster.kubectl("get", "deploy", "ed", "-o", "json").stdout)
    assert d["spec"]["template"]["spec"]["containers"][0]["image"] == "nginx:1.27"
    assert d["metadata"]["generation"] >= 6
    cluster.kubectl("delete", "deploy", "ed")


def test_get_watch(cluster: Cluster) -> None:
    cluster.kubectl("create", "configmap", "w1", "--from-literal=a=1")
    proc = subprocess.Popen(["kubectl", "--cache-dir", cluster.cache_dir, "get", "cm", "-w", "--request-timeout=0"],
                            env={**__import__("os").environ, "KUBECONFIG": cluster.api.kubeconfig},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(1.0)
        cluster.kubectl("create", "configmap", "w2", "--from-literal=b=2")
        time.sleep(1.0)
    finally:
        proc.terminate()
        out, err = proc.communicate(timeout=10)
    lines = [ln.split() for ln in out.strip().splitlines()]
    assert lines[0] == ["NAME", "DATA", "AGE"], out + err
    names = [ln[0] for ln in lines[1:]]
    assert "w1" in names and "w2" in names, out + err
    cluster.kubectl("delete", "cm", "w1", "w2")


def test_delete_cascade_variants(cluster: Cluster) -> None:
    for name in ("bg", "fg", "orph"):
        cluster.kubectl("create", "deployment", name, "--image=nginx")
    assert 'deployment.apps "bg" deleted' in cluster.kubectl("delete", "deploy", "bg", "--cascade=background").stdout
    assert cluster.kubectl("get", "deploy", "bg", check=False).returncode != 0
    # foreground/orphan leave the object with its finalizer for the garbage collector
    cluster.kubectl("delete", "deploy", "fg", "--cascade=foreground", "--wait=false")
    cluster.kubectl("delete", "deploy", "orph", "--cascade=orphan", "--wait=false")
    fg = json.loads(cluster.kubectl("get", "deploy", "fg", "-o", "json").stdout)
    orph = json.loads(cluster.kubectl("get", "deploy", "orph", "-o", "json").stdout)
    assert fg["metadata"]["finalizers"] == ["foregroundDeletion"] and fg["metadata"]["deletionTimestamp"]
    assert orph["metadata"]["finalizers"] == ["orphan"] and orph["metadata"]["deletionTimestamp"]
    # the garbage collector's part: removing the last finalizer deletes the object
    for name in ("fg", "orph"):
        cluster.kubectl("patch", "deploy", name, "--type=json", "-p", '[{"op":"remove","path":"/metadata/finalizers"}]')
        assert cluster.kubectl("get", "deploy", name, check=False).returncode != 0
    r = cluster.kubectl("delete", "deploy", "nope", check=False)
    assert r.returncode != 0 and 'deployments.apps "nope" not found' in r.stderr


def test_errors_as_kubectl_prints_them(cluster: Cluster, tmp_path: Path) -> None:
    r = cluster.kubectl("get", "pod", "nope", check=False)
    assert r.returncode == 1 and 'Error from server (NotFound): pods "nope" not found' in r.stderr
    cluster.kubectl("create", "configmap", "dup")
    r = cluster.kubectl("create", "configmap", "dup", check=False)
    assert 'configmaps "dup" already exists' in r.stderr
    dup = write(tmp_path / "dup.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: dup\n")
    r = cluster.kubectl("create", "-f", dup, check=False)
    assert 'Error from server (AlreadyExists): error when creating' in r.stderr and 'configmaps "dup" already exists' in r.stderr
    bad = write(tmp_path / "bad.yaml", "apiVersion: v1\nkind: Pod\nmetadata:\n  name: Bad_Name\nspec:\n  containers:\n  - name: c\n")
    r = cluster.kubectl("create", "-f", bad, check=False)
    assert 'The Pod "Bad_Name" is invalid' in r.stderr
    assert "* metadata.name: Invalid value" in r.stderr and "* spec.containers[0].image: Required value" in r.stderr
    cluster.kubectl("delete", "cm", "dup")


def test_protobuf_bodies_from_create_generators(cluster: Cluster) -> None:
    """kubectl 1.32 sends these as application/vnd.kubernetes.protobuf."""
    cluster.kubectl("create", "deployment", "pb", "--image=nginx:1.27", "--replicas=3", "--port=80")
    d = json.loads(cluster.kubectl("get", "deploy", "pb", "-o", "json").stdout)
    assert d["spec"]["replicas"] == 3 and d["spec"]["selector"] == {"matchLabels": {"app": "pb"}}
    c = d["spec"]["template"]["spec"]["containers"][0]
    assert c["image"] == "nginx:1.27" and c["ports"] == [{"containerPort": 80, "protocol": "TCP"}]
    cluster.kubectl("create", "deployment", "pb0", "--image=nginx", "--replicas=0")
    assert cluster.kubectl("get", "deploy", "pb0", "-o", "jsonpath={.spec.replicas}").stdout == "0"
    cluster.kubectl("create", "service", "clusterip", "pbsvc", "--tcp=80:8080")
    svc = json.loads(cluster.kubectl("get", "svc", "pbsvc", "-o", "json").stdout)
    assert svc["spec"]["ports"] == [{"name": "80-8080", "port": 80, "protocol": "TCP", "targetPort": 8080}]
    assert "autoscaled" in cluster.kubectl("autoscale", "deployment", "pb", "--min=2", "--max=5", "--cpu-percent=60").stdout
    hpa = json.loads(cluster.kubectl("get", "hpa.v2.autoscaling", "pb", "-o", "json").stdout)
    assert hpa["spec"]["minReplicas"] == 2 and hpa["spec"]["maxReplicas"] == 5
    assert hpa["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"] == 60
    cluster.kubectl("create", "secret", "generic", "pbsec", "--from-literal=k=v")
    assert cluster.kubectl("get", "secret", "pbsec", "-o", "jsonpath={.data.k}").stdout == "dg=="
    cluster.kubectl("create", "job", "pbjob", "--image=busybox", "--", "echo", "hi")
    job = json.loads(cluster.kubectl("get", "job", "pbjob", "-o", "json").stdout)
    assert job["spec"]["template"]["spec"]["containers"][0]["command"] == ["echo", "hi"]
    cluster.kubectl("delete", "deploy", "pb", "pb0")
    cluster.kubectl("delete", "svc", "pbsvc")
    cluster.kubectl("delete", "hpa", "pb")
    cluster.kubectl("create", "cronjob", "pbcron", "--image=busybox", "--schedule=*/5 * * * *", "--", "date")
    cj = json.loads(cluster.kubectl("get", "cronjob", "pbcron", "-o", "json").stdout)
    assert cj["spec"]["schedule"] == "*/5 * * * *" and cj["spec"]["concurrencyPolicy"] == "Allow"
    assert cj["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["command"] == ["date"]
    cluster.kubectl("delete", "job", "pbjob")
    cluster.kubectl("delete", "cronjob", "pbcron")


EVERY_KIND = """\
apiVersion: apps/v1
kind: ReplicaSet
metadata: {name: k-rs}
spec:
  replicas: 2
  selector: {matchLabels: {app: k-rs}}
  template:
    metadata: {labels: {app: k-rs}}
    spec: {containers: [{name: c, image: nginx}]}
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: k-sts}
spec:
  serviceName: k-sts
  selector: {matchLabels: {app: k-sts}}
  template:
    metadata: {labels: {app: k-sts}}
    spec: {containers: [{name: c, image: nginx}]}
---
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: k-ds}
spec:
  selector: {matchLabels: {app: k-ds}}
  template:
    metadata: {labels: {app: k-ds}}
    spec: {containers: [{name: c, image: nginx}]}
---
apiVersion: batch/v1
kind: Job
metadata: {name: k-job}
spec:
  template:
    spec: {containers: [{name: c, image: busybox, command: [sh, -c, "true"]}], restartPolicy: Never}
---
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata: {name: k-hpa}
spec:
  scaleTargetRef: {apiVersion: apps/v1, kind: ReplicaSet, name: k-rs}
  minReplicas: 1
  maxReplicas: 3
---
apiVersion: coordination.k8s.io/v1
kind: Lease
metadata: {name: k-lease}
spec: {holderIdentity: me, leaseDurationSeconds: 15}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: k-slice}
addressType: IPv4
endpoints: [{addresses: [10.0.0.1]}]
ports: [{port: 80, protocol: TCP}]
---
apiVersion: v1
kind: Endpoints
metadata: {name: k-ep}
subsets: [{addresses: [{ip: 10.0.0.1}], ports: [{port: 80}]}]
---
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata: {name: k-sc}
provisioner: example.com/none
---
apiVersion: v1
kind: PersistentVolume
metadata: {name: k-pv}
spec:
  capacity: {storage: 1Gi}
  accessModes: [ReadWriteOnce]
  hostPath: {path: /tmp/k-pv}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: k-pvc}
spec:
  accessModes: [ReadWriteOnce]
  resources: {requests: {storage: 1Gi}}
---
apiVersion: v1
kind: Event
metadata: {name: k-ev}
involvedObject: {kind: ReplicaSet, name: k-rs, namespace: default}
reason: Testing
message: hello
type: Normal
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: k-sa}
---
apiVersion: v1
kind: Node
metadata: {name: k-node, labels: {node-role.kubernetes.io/worker: ""}}
"""


def test_every_kind_with_tables(cluster: Cluster, tmp_path: Path) -> None:
    f = write(tmp_path / "kinds.yaml", EVERY_KIND)
    out = cluster.kubectl("apply", "-f", f).stdout
    assert out.count("created") == 14, out
    kinds = "rs,sts,ds,jobs,hpa,leases,endpointslices,ep,sc,pv,pvc,events,sa,nodes"
    r = cluster.kubectl("get", kinds, "-o", "wide")
    for name in ("k-rs", "k-sts", "k-ds", "k-job", "k-hpa", "k-lease", "k-slice", "k-ep", "k-sc", "k-pv", "k-pvc",
                 "Testing", "k-sa", "k-node"):
        assert name in r.stdout, (name, r.stdout)
    rows = [ln for ln in r.stdout.splitlines() if "node/k-node" not in ln]  # a node without nodeInfo: <unknown>
    assert "<unknown>" not in "\n".join(rows).replace("cpu: <unknown>", "")
    assert "ReplicaSet/k-rs" in r.stdout and "10.0.0.1:80" in r.stdout and "worker" in r.stdout
    assert "k-rs" in cluster.kubectl("get", "all").stdout
    assert "Testing" in cluster.kubectl("get", "events", "--field-selector", "involvedObject.name=k-rs").stdout
    assert "Testing" not in cluster.kubectl("get", "events", "--field-selector", "involvedObject.name=x").stdout
    out = cluster.kubectl("get", "cm", "--chunk-size=1", "-A", "-o", "name").stdout
    assert out.count("configmap/") == len(json.loads(cluster.kubectl("get", "cm", "-A", "-o", "json").stdout)["items"])
    cluster.kubectl("delete", "-f", f, "--wait=false")
