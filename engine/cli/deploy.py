"""`vigil deploy systemd | containerfile | kubernetes`: deployment files for this site, on stdout."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from engine.deploy import DeployError, containerfile, kubernetes_manifests, systemd_unit

__all__ = ["deploy"]

_REPOSITORY = Path(__file__).resolve().parents[2]


@click.group("deploy")
def deploy() -> None:
    """Deployment files: a hardened systemd unit, a container image definition, Kubernetes manifests."""


@deploy.command("systemd")
@click.option("--prefix", default=str(_REPOSITORY), show_default=True, help="Where Vigil is installed (its .venv).")
@click.option("--config", "config", default="/etc/vigil/config.toml", show_default=True)
@click.option("--data", default="/var/lib/vigil", show_default=True, help="The data directory.")
@click.option("--mllp", default="0.0.0.0:2575", show_default=True, help="HOST:PORT for MLLP.")
@click.option("--user", default="vigil", show_default=True, help="The system user the node runs as.")
@click.option("--env-file", default="/etc/vigil/vigil.env", show_default=True, help="VIGIL_AUDIT_KEY=... (0600).")
@click.option("--nats", default="", help="Join a cluster over these NATS servers (URL[,URL...]).")
@click.option("--node-id", default="", help="This node's id in the cluster.")
def deploy_systemd(**options: str) -> None:
    """A unit for one node: it writes only its data directory, with no capabilities and a system-call filter."""
    _emit(lambda: systemd_unit(**options))


@deploy.command("containerfile")
def deploy_containerfile() -> None:
    """An image definition (docker or podman build -f Containerfile . from the repository's top)."""
    _emit(containerfile)


@deploy.command("kubernetes")
@click.option("--image", required=True, help="The Vigil image (REGISTRY/vigil:TAG).")
@click.option("--nodes", default=3, show_default=True, help="Vigil nodes (a StatefulSet).")
@click.option("--storage", default="50Gi", show_default=True, help="Each node's data volume.")
@click.option("--nats-image", default="nats:2.10-alpine", show_default=True)
@click.option("--nats-storage", default="20Gi", show_default=True, help="Each NATS server's volume.")
@click.option("--namespace", default="vigil", show_default=True, help="Named in the instructions at the top.")
def deploy_kubernetes(**options: Any) -> None:
    """Three NATS JetStream servers and the nodes, probed on /healthz and /readyz, with the scaling policy."""
    _emit(lambda: kubernetes_manifests(**options))


def _emit(make: Callable[[], str]) -> None:
    try:
        text = make()
    except DeployError as exc:
        raise click.ClickException(str(exc)) from None
    sys.stdout.write(text)
