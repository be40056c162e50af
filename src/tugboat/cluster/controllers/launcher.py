"""Starting the control-plane components as processes, for ``tug cluster up`` (single machine):

    from tugboat.cluster.controllers.launcher import spawn_control_plane
    procs = spawn_control_plane(kubeconfig, logdir)            # scheduler + controller-manager
    procs = spawn_control_plane(kubeconfig, logdir, simulated_nodes=3)
    ...
    stop_processes(procs)
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys


def _spawn(args: list[str], log_path: str) -> subprocess.Popen:
    log = open(log_path, "ab")  # noqa: SIM115 - handed to the child
    try:
        return subprocess.Popen([sys.executable, "-m", "tugboat.cli.main", "cluster", *args],
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    finally:
        log.close()


def spawn_control_plane(kubeconfig: str, logdir: str, *, simulated_nodes: int = 0,
                        extra_controller_args: list[str] | None = None) -> list[subprocess.Popen]:
    """Start ``tug cluster scheduler`` and ``tug cluster controller-manager`` (and optionally
    ``simulate-nodes``) against ``kubeconfig``; logs go to ``logdir/<component>.log``."""
    os.makedirs(logdir, exist_ok=True)
    procs = [
        _spawn(["scheduler", "--kubeconfig", kubeconfig], os.path.join(logdir, "scheduler.log")),
        _spawn(["controller-manager", "--kubeconfig", kubeconfig, *(extra_controller_args or [])],
               os.path.join(logdir, "controller-manager.log")),
    ]
    if simulated_nodes:
        procs.append(_spawn(["simulate-nodes", "--kubeconfig", kubeconfig, "--count", str(simulated_nodes)],
                            os.path.join(logdir, "simulate-nodes.log")))
    return procs


def stop_processes(procs: list[subprocess.Popen], timeout: float = 10.0) -> None:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
