"""The Kubernetes client shared by the control plane: REST, informers, work queues, leader election.

Typical use::

    client = ApiClient.from_kubeconfig(path)
    pods = Informer(client, PODS)
    pods.add_handler(on_add=..., on_update=..., on_delete=...)
    pods.start(); await pods.wait_synced()
"""

from tugboat.cluster.client.events import EventRecorder
from tugboat.cluster.client.informer import Informer, InformerFactory
from tugboat.cluster.client.kubeconfig import KubeConfig, load_kubeconfig
from tugboat.cluster.client.leaderelection import LeaderElector
from tugboat.cluster.client.rest import ApiClient, ApiError, ConflictError, GoneError, NotFoundError
from tugboat.cluster.client.workqueue import WorkQueue, run_worker

__all__ = [
    "ApiClient", "ApiError", "ConflictError", "EventRecorder", "GoneError", "Informer", "InformerFactory",
    "KubeConfig", "LeaderElector", "NotFoundError", "WorkQueue", "load_kubeconfig", "run_worker",
]
