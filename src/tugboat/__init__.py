"""tugboat: containers, images, a Docker-compatible engine and a Kubernetes-compatible cluster."""

__version__ = "0.1.0"
