"""Engine benchmark: tugboat's daemon and `tug` CLI against the issue's goals, paired with dockerd
and podman when they are installed and running (they are never installed by this script).

    .venv/bin/python bench/engine.py [--runs 20] [--containers 100]

Figures: `run --rm busybox true`, the `run -d` + `stop -t 0` + `rm` cycle (with the medians of its
three commands, and the same three calls over one API connection: the daemon's side without CLI
start-up), `ps` with N running containers, N concurrent `run -d`, RSS of the idle daemon and per
running container (daemon growth plus the per-container tug-monitor). Wall-clock medians (min-max)
of whole processes. `--containers 0` skips the N-container part. The load average is printed
first: on a busy machine every figure here grows (each command is a new Python process).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "src"))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests"))

TUG = [os.path.join(os.path.dirname(sys.executable), "tug")]


def timed(cmd: list[str], env: dict | None = None) -> float:
    t = time.perf_counter()
    subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, check=False)
    return time.perf_counter() - t


def series(label: str, fn, runs: int) -> list[float]:  # type: ignore[no-untyped-def]
    fn()  # warm-up
    xs = [fn() for _ in range(runs)]
    print(f"  {label:<48} {statistics.median(xs):7.3f} s  ({min(xs):.3f}-{max(xs):.3f}), n={runs}", flush=True)
    return xs


def cycle(cli: list[str], env: dict | None, phases: list[tuple[float, float, float]]) -> float:
    """`run -d busybox sleep 300` + `stop -t 0` + `rm`: the whole cycle's wall time."""
    t0 = time.perf_counter()
    cid = subprocess.run([*cli, "run", "-d", "busybox", "sleep", "300"], capture_output=True,
                         env=env).stdout.decode().strip()
    t1 = time.perf_counter()
    subprocess.run([*cli, "stop", "-t", "0", cid], capture_output=True, env=env)
    t2 = time.perf_counter()
    subprocess.run([*cli, "rm", cid], capture_output=True, env=env)
    t3 = time.perf_counter()
    phases.append((t1 - t0, t2 - t1, t3 - t2))
    return t3 - t0


def api_cycle(client, phases: list[tuple[float, float, float]]) -> float:  # type: ignore[no-untyped-def]
    """The cycle's requests on one kept-alive connection: no CLI start-up, the daemon's own cost."""
    t0 = time.perf_counter()
    cid = client.post("/containers/create", {"Image": "busybox", "Cmd": ["sleep", "300"]})["Id"]
    client.post(f"/containers/{cid}/start")
    t1 = time.perf_counter()
    client.post(f"/containers/{cid}/stop", query={"t": "0"})
    t2 = time.perf_counter()
    client.delete(f"/containers/{cid}")
    t3 = time.perf_counter()
    phases.append((t1 - t0, t2 - t1, t3 - t2))
    return t3 - t0


def print_phases(phases: list[tuple[float, float, float]], what: str = "run -d / stop -t 0 / rm") -> None:
    if phases:
        med = [statistics.median(p[i] for p in phases) * 1000 for i in range(3)]
        print(f"    {'medians: ' + what:<46} {med[0]:5.0f} / {med[1]:3.0f} / {med[2]:3.0f} ms")


def rss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def monitors_of(root: str) -> list[int]:
    out = []
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            with open(f"/proc/{p}/comm") as f:
                if not f.read().startswith("tug-monitor"):
                    continue
            with open(f"/proc/{p}/cmdline", "rb") as f:
                if root.encode() in f.read():
                    out.append(int(p))
        except OSError:
            continue
    return out


def bench_tug(runs: int, n: int) -> None:
    from engine_support import Daemon, bootstrap_busybox, cleanup_root

    base = tempfile.mkdtemp(prefix="tug-bench-engine-")
    root = os.path.join(base, "root")
    os.makedirs(root)
    bootstrap_busybox(root)
    d = Daemon(root=root, sock=os.path.join(base, "tug.sock"), env={"TUG_ENGINE_NO_NETWORK": "1"})
    t = time.perf_counter()
    d.start()
    print(f"tugboat (runtime {(os.environ.get('TUG_ENGINE_RUNC') and 'runc') or 'tugboat'}, --network none)")
    print(f"  {'daemon start until /_ping answers':<48} {time.perf_counter() - t:7.3f} s")
    # a normal install has byte-compiled modules; this environment may forbid writing them
    env = dict(os.environ, TUG_HOST=d.host, PYTHONPYCACHEPREFIX=os.path.join(base, "pycache"))
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    denv = dict(os.environ, DOCKER_HOST=d.host)
    try:
        time.sleep(0.5)
        print(f"  {'idle daemon RSS':<48} {rss_kib(d.proc.pid) / 1024:7.1f} MiB")
        series("tug run --rm busybox true", lambda: timed([*TUG, "run", "--rm", "busybox", "true"], env), runs)
        if shutil.which("docker"):
            series("docker CLI -> tugd: run --rm busybox true",
                   lambda: timed(["docker", "run", "--rm", "busybox", "true"], denv), runs)

        phases: list[tuple[float, float, float]] = []
        series("tug run -d + stop -t 0 + rm (one cycle)", lambda: cycle(TUG, env, phases), runs)
        print_phases(phases[1:])
        if shutil.which("docker"):
            series("docker CLI -> tugd: run -d + stop -t 0 + rm", lambda: cycle(["docker"], denv, []), runs)
        api_phases: list[tuple[float, float, float]] = []
        series("the same cycle over the API (daemon side only)", lambda: api_cycle(d.client(), api_phases), runs)
        print_phases(api_phases[1:], "create+start / stop t=0 / delete")
        series("tug ps (0 running)", lambda: timed([*TUG, "ps"], env), runs)
        if n > 0:
            rss0 = rss_kib(d.proc.pid)
            t0 = time.perf_counter()
            with concurrent.futures.ThreadPoolExecutor(max_workers=n) as pool:
                res = list(pool.map(lambda i: subprocess.run([*TUG, "run", "-d", "--name", f"b{i}", "busybox", "sleep", "600"],
                                                             capture_output=True, env=env), range(n)))
            ok = sum(1 for r in res if r.returncode == 0)
            print(f"  {f'{n} concurrent tug run -d':<48} {time.perf_counter() - t0:7.3f} s total, {ok}/{n} succeeded")
            time.sleep(1.0)
            running = len(subprocess.run([*TUG, "ps", "-q"], capture_output=True, env=env).stdout.split())
            series(f"tug ps ({running} running)", lambda: timed([*TUG, "ps"], env), runs)
            if shutil.which("docker"):
                series(f"docker CLI -> tugd: ps ({running} running)", lambda: timed(["docker", "ps"], denv), runs)
            rss1 = rss_kib(d.proc.pid)
            mons = monitors_of(root)
            mon_kib = sum(rss_kib(p) for p in mons) / max(1, len(mons))
            per = (rss1 - rss0) / max(1, running)
            print(f"  {'daemon RSS with containers':<48} {rss1 / 1024:7.1f} MiB ({running} running)")
            print(f"  {'RSS per running container':<48} {(per + mon_kib) / 1024:7.2f} MiB "
                  f"(daemon growth {per:.0f} KiB + tug-monitor {mon_kib:.0f} KiB; conmon 1.9 MiB, shim 12.9 MiB)")
            subprocess.run([*TUG, "rm", "-f", *[f"b{i}" for i in range(n)]], capture_output=True, env=env)
    finally:
        d.stop()
        cleanup_root(root)
        shutil.rmtree(base, ignore_errors=True)


def bench_peers(runs: int) -> None:
    if os.path.exists("/var/run/docker.sock") and shutil.which("docker"):
        p = subprocess.run(["docker", "-H", "unix:///var/run/docker.sock", "version"], capture_output=True)
        if p.returncode == 0 and subprocess.run(["docker", "-H", "unix:///var/run/docker.sock", "image", "inspect", "busybox"],
                                                capture_output=True).returncode == 0:
            env = dict(os.environ, DOCKER_HOST="unix:///var/run/docker.sock")
            print("dockerd (running at /var/run/docker.sock)")
            series("docker run --rm busybox true", lambda: timed(["docker", "run", "--rm", "busybox", "true"], env), runs)
            phases: list[tuple[float, float, float]] = []
            series("docker run -d + stop -t 0 + rm (one cycle)", lambda: cycle(["docker"], env, phases), runs)
            print_phases(phases[1:])
            series("docker ps", lambda: timed(["docker", "ps"], env), runs)
    else:
        print("dockerd: not running here; skipped (reference medians: run --rm 0.55 s, cycle 0.81 s)")
    if shutil.which("podman") and subprocess.run(["podman", "image", "exists", "busybox"], capture_output=True).returncode == 0:
        print("podman")
        series("podman run --rm busybox true", lambda: timed(["podman", "run", "--rm", "busybox", "true"]), runs)
        phases = []
        series("podman run -d + stop -t 0 + rm (one cycle)", lambda: cycle(["podman"], None, phases), runs)
        print_phases(phases[1:])
        series("podman ps", lambda: timed(["podman", "ps"]), runs)
    else:
        print("podman: not installed (or no busybox image); skipped (reference medians: run --rm 0.67 s, cycle 0.74 s)")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--containers", type=int, default=100)
    a = ap.parse_args()
    if os.geteuid() != 0:
        print("bench/engine.py needs root; skipped")
        return 0
    with open("/proc/loadavg") as f:
        print(f"load average at start: {f.read().split()[0]} ({os.cpu_count()} CPUs)")
    bench_tug(a.runs, a.containers)
    bench_peers(a.runs)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
