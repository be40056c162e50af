"""`make demo`: the main job, end to end, on a fresh machine.

1. Images: bootstrap a busybox image from Debian's busybox-static (no image hub needed), list it,
   save it to a docker-archive, load it back into a second, empty data root, check the store.
2. The engine: start `tug daemon`, run containers with `tug` and with the real `docker` CLI,
   build a small web server image with `tug build`, publish its port, push it to `tug registry`
   and pull it back.
3. The orchestrator: `tug cluster up --nodes 3`, `kubectl apply` of a Deployment of 3 replicas of
   that web server plus a Service, a request to the Service from a pod answered by every replica,
   `kubectl scale`, and the cluster taken down.

Every step prints the command it runs and its output. Everything lives in a temporary directory
that is removed at the end, together with every process, network and mount the demo made.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid

TUG = [sys.executable, "-m", "tugboat.cli.main"]


def banner(title: str) -> None:
    print(f"\n{'=' * 78}\n{title}\n{'=' * 78}", flush=True)


def sh(argv: list[str], shown: str, *, env: dict[str, str] | None = None, input: str | None = None,
       check: bool = True, timeout: float = 300) -> str:
    print(f"\n$ {shown}", flush=True)
    t = time.perf_counter()
    r = subprocess.run(argv, capture_output=True, text=True, env=env, input=input, timeout=timeout)
    sys.stdout.write(r.stdout)
    if r.stderr:
        sys.stdout.write(r.stderr)
    print(f"  ({time.perf_counter() - t:.2f} s, exit {r.returncode})", flush=True)
    if check and r.returncode != 0:
        raise SystemExit(f"demo step failed: {shown}")
    return r.stdout


def tug(root: str, *args: str, host: str | None = None, **kw: object) -> str:
    glob = ["--root", root] + (["--host", host] if host else [])
    return sh([*TUG, *glob, *args], " ".join(["tug", *glob, *args]), **kw)  # type: ignore[arg-type]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(what: str, pred, timeout: float = 60.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = pred()
        except Exception as exc:  # keep polling until the deadline
            last = exc
        if last and not isinstance(last, Exception):
            return last
        time.sleep(0.5)
    raise SystemExit(f"demo: timed out waiting for {what} (last: {last!r})")


# --------------------------------------------------------------------------- part 1: images
def part_images(base: str, first: str, second: str) -> None:
    banner("1. Images: base images without any image hub, save and load")
    archive = os.path.join(base, "busybox.tar")
    tug(first, "image", "bootstrap", "busybox")
    tug(first, "images")
    tug(first, "save", "-o", archive, "busybox")
    print(f"  archive: {os.path.getsize(archive)} bytes (docker save format, also an OCI layout)")
    tug(second, "load", "-i", archive)
    tug(second, "images", "--digests")
    tug(second, "history", "busybox")
    tug(second, "system", "check")
    a = tug(first, "images", "-q", "--no-trunc", "busybox").strip()
    b = tug(second, "images", "-q", "--no-trunc", "busybox").strip()
    print(f"\n  image ID in both roots: {a[:19]}… {'(the same)' if a == b else '(DIFFERENT!)'}")
    if a != b:
        raise SystemExit("demo: the loaded image differs from the saved one")


# --------------------------------------------------------------------------- part 2: the engine
WEB_DOCKERFILE = """\
FROM busybox
RUN mkdir -p /www
COPY index.html /www/index.html
EXPOSE 8080
CMD ["sh", "-c", "hostname > /www/host.txt && exec httpd -f -p 8080 -h /www"]
"""


def part_engine(base: str, root: str) -> tuple[subprocess.Popen[bytes], str]:
    banner("2. The engine: tug daemon, the real docker CLI, tug build, published ports, a registry")
    sock = os.path.join(base, "tug.sock")
    host = f"unix://{sock}"
    log = open(os.path.join(base, "daemon.log"), "wb")  # noqa: SIM115 - closed with the process
    print(f"\n$ tug --root {root} daemon --host {host} &", flush=True)
    daemon = subprocess.Popen([*TUG, "--root", root, "daemon", "--host", host], stdout=log, stderr=log,
                              stdin=subprocess.DEVNULL)
    wait_for("the daemon socket", lambda: os.path.exists(sock) and daemon.poll() is None, 30)
    if daemon.poll() is not None:
        raise SystemExit("demo: the daemon exited; see daemon.log")
    tug(root, "version", host=host)
    tug(root, "run", "--rm", "busybox", "echo", "hello from a tugboat container", host=host)
    denv = dict(os.environ, DOCKER_HOST=host, DOCKER_CONFIG=os.path.join(base, "docker-config"))
    if shutil.which("docker"):
        sh(["docker", "run", "--rm", "busybox", "sh", "-c", "echo hello from the docker CLI; id; hostname"],
           "DOCKER_HOST=" + host + " docker run --rm busybox sh -c 'echo hello from the docker CLI; id; hostname'",
           env=denv)
    ctxdir = os.path.join(base, "web")
    os.makedirs(ctxdir)
    with open(os.path.join(ctxdir, "Dockerfile"), "w") as f:
        f.write(WEB_DOCKERFILE)
    with open(os.path.join(ctxdir, "index.html"), "w") as f:
        f.write("<h1>hello from tugboat</h1>\n")
    print("\n# Dockerfile:\n" + "".join("    " + line + "\n" for line in WEB_DOCKERFILE.splitlines()))
    tug(root, "build", "-t", "web:1", ctxdir, host=host)
    tug(root, "build", "-t", "web:1", ctxdir, host=host)  # again: every step from the cache
    port = free_port()
    cid = tug(root, "run", "-d", "--name", "web", "-p", f"127.0.0.1:{port}:8080", "web:1", host=host).strip()
    tug(root, "ps", host=host)

    def fetch() -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/index.html", timeout=2) as r:
            return r.read().decode()

    body = wait_for("the published port", fetch, 20)
    print(f"\n$ curl http://127.0.0.1:{port}/index.html\n{body}", end="")
    tug(root, "logs", "web", host=host)
    tug(root, "stop", "-t", "1", "web", host=host)
    tug(root, "rm", "web", host=host)
    del cid

    # a registry: push the image and pull it back into an empty root
    reg_port = free_port()
    reg_log = open(os.path.join(base, "registry.log"), "wb")  # noqa: SIM115
    print(f"\n$ tug registry serve --addr 127.0.0.1:{reg_port} --root {base}/registry &", flush=True)
    registry = subprocess.Popen([*TUG, "registry", "serve", "--addr", f"127.0.0.1:{reg_port}", "--root",
                                 os.path.join(base, "registry")], stdout=reg_log, stderr=reg_log,
                                stdin=subprocess.DEVNULL)
    try:
        def ping() -> bool:
            with urllib.request.urlopen(f"http://127.0.0.1:{reg_port}/v2/", timeout=1) as r:
                return r.status == 200

        wait_for("the registry", ping, 20)
        ref = f"127.0.0.1:{reg_port}/demo/web:1"
        tug(root, "tag", "web:1", ref, host=host)
        tug(root, "push", ref, host=host)
        tug(os.path.join(base, "root-c"), "pull", ref)
        tug(os.path.join(base, "root-c"), "images")
        with urllib.request.urlopen(f"http://127.0.0.1:{reg_port}/v2/_catalog", timeout=2) as r:
            print(f"\n$ curl http://127.0.0.1:{reg_port}/v2/_catalog\n{r.read().decode()}")
    finally:
        registry.terminate()
        registry.wait(10)
    archive = os.path.join(base, "web.tar")
    tug(root, "save", "-o", archive, "web:1", host=host)
    return daemon, archive


def stop_daemon(daemon: subprocess.Popen[bytes]) -> None:
    if daemon.poll() is None:
        daemon.terminate()
        try:
            daemon.wait(30)
        except subprocess.TimeoutExpired:
            daemon.kill()
            daemon.wait()


# --------------------------------------------------------------------------- part 3: the cluster
WEB_K8S = """\
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 3
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: web
        image: web:1
        imagePullPolicy: Never
        ports: [{containerPort: 8080, name: http}]
        readinessProbe: {httpGet: {path: /index.html, port: http}, periodSeconds: 1}
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: http, name: http}]
"""


def part_cluster(base: str, archive: str) -> None:
    banner("3. The orchestrator: tug cluster up --nodes 3, kubectl, a Deployment and a Service")
    if not shutil.which("kubectl"):
        print("kubectl is not installed: skipping the cluster part")
        return
    state_dir = os.path.join(base, "cluster")
    name = "demo" + uuid.uuid4().hex[:4]
    root = os.path.join(base, "root-k")
    sh([*TUG, "--root", root, "cluster", "up", "--nodes", "3", "--isolated", "--name", name,
        "--subnet", "172.30.77.0/24", "--state-dir", state_dir, "--image-archive", archive,
        "--node-monitor-grace-period", "10"],
       f"tug cluster up --nodes 3 --isolated --name {name} --state-dir {state_dir} --image-archive {archive}",
       timeout=240)
    try:
        with open(os.path.join(state_dir, "cluster.json")) as f:
            kubeconfig = json.load(f)["kubeconfig"]
        env = dict(os.environ, KUBECONFIG=kubeconfig)
        cache = ["--cache-dir", os.path.join(base, "kube-cache")]

        def kubectl(*args: str, **kw: object) -> str:
            return sh(["kubectl", *cache, *args], "kubectl " + " ".join(args), env=env, **kw)  # type: ignore[arg-type]

        kubectl("get", "nodes", "-o", "wide")
        print("\n# web.yaml:\n" + "".join("    " + line + "\n" for line in WEB_K8S.splitlines()))
        kubectl("apply", "-f", "-", input=WEB_K8S)
        kubectl("rollout", "status", "deployment/web", "--timeout=120s", timeout=150)
        kubectl("get", "pods", "-o", "wide")
        kubectl("get", "service", "web")
        script = "for i in $(seq 1 12); do wget -q -O - http://web/host.txt; done"
        kubectl("run", "client", "--image=web:1", "--image-pull-policy=Never", "--restart=Never",
                "--command", "--", "sh", "-c", script)
        kubectl("wait", "--for=jsonpath={.status.phase}=Succeeded", "pod/client", "--timeout=60s", timeout=90)
        out = kubectl("logs", "client")
        hosts = {line.strip() for line in out.splitlines() if line.strip().startswith("web-")}
        print(f"\n  the Service was answered by {len(hosts)} different replicas: {sorted(hosts)}")
        kubectl("scale", "deployment/web", "--replicas=5")
        kubectl("rollout", "status", "deployment/web", "--timeout=120s", timeout=150)
        kubectl("get", "pods", "-o", "wide")
        kubectl("get", "endpoints", "web")
    finally:
        sh([*TUG, "--root", root, "cluster", "down", "--state-dir", state_dir],
           f"tug cluster down --state-dir {state_dir}", check=False, timeout=120)


def main() -> int:
    if os.geteuid() != 0:
        print("tugboat's demo runs containers: run it as root (make demo)")
        return 1
    base = tempfile.mkdtemp(prefix="tugboat-demo-", dir="/var/tmp")
    first, second = os.path.join(base, "root-a"), os.path.join(base, "root-b")
    os.environ.setdefault("TUG_NETWORK_INSTANCE", uuid.uuid4().hex[:4])
    print(f"tugboat demo: everything lives under {base}")
    daemon = None
    t0 = time.monotonic()
    try:
        part_images(base, first, second)
        daemon, archive = part_engine(base, first)
        stop_daemon(daemon)
        daemon = None
        part_cluster(base, archive)
        print(f"\nDone in {time.monotonic() - t0:.0f} s: images bootstrapped, saved and loaded; containers run by "
              "tug and by the docker CLI; an image built, served, pushed and pulled; a 3-node cluster ran it "
              "behind a Service and was taken down.")
        return 0
    finally:
        if daemon is not None:
            stop_daemon(daemon)
        subprocess.run(["umount", "-R", "-l", base], capture_output=True)
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
