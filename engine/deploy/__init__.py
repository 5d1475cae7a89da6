"""Deployment files (node floor): a systemd unit, a container image definition and Kubernetes manifests,
made from templates with the site's values (`vigil deploy`)."""

from engine.deploy.render import DeployError, containerfile, kubernetes_manifests, systemd_unit

__all__ = ["DeployError", "containerfile", "kubernetes_manifests", "systemd_unit"]
