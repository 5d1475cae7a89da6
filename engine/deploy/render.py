"""The deployment templates filled in; each value checked first, so a file never carries a broken line."""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath
from string import Template
from typing import Final

from engine.core.errors import VigilError

__all__ = ["DeployError", "containerfile", "kubernetes_manifests", "systemd_unit"]

_TEMPLATES: Final = Path(__file__).with_name("templates")
_NAME: Final = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")  # a Unix user name
_IMAGE: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/:@-]*$")
_QUANTITY: Final = re.compile(r"^[1-9][0-9]*(Mi|Gi|Ti)$")
_ADDRESS: Final = re.compile(r"^[A-Za-z0-9.:\[\]-]+:[0-9]{1,5}$")
_STATE_ROOT: Final = PurePosixPath("/var/lib")


class DeployError(VigilError):
    """A value that would make a broken deployment file (named)."""


def systemd_unit(
    *,
    prefix: str,
    config: str,
    data: str,
    mllp: str = "0.0.0.0:2575",
    user: str = "vigil",
    env_file: str = "/etc/vigil/vigil.env",
    nats: str = "",
    node_id: str = "",
) -> str:
    """A hardened unit for one node installed at `prefix` (its `.venv/bin/vigil`)."""
    for name, value in (("prefix", prefix), ("config", config), ("data", data), ("env_file", env_file)):
        _absolute(name, value)
    if not _NAME.match(user):
        raise DeployError(f"user {user!r} is not a Unix user name")
    if not _ADDRESS.match(mllp):
        raise DeployError(f"mllp {mllp!r} is not HOST:PORT")
    if bool(nats) != bool(node_id):
        raise DeployError("a cluster node needs both nats (URL[,URL...]) and node_id")
    if node_id and not re.fullmatch(r"[A-Za-z0-9._-]+", node_id):
        raise DeployError(f"node_id {node_id!r}: letters, digits, '.', '_' and '-' only")
    if nats and not re.fullmatch(r"[A-Za-z0-9.:/,_\[\]-]+", nats):
        raise DeployError(f"nats {nats!r} is not a list of URLs")
    cluster_args = f" --nats {nats} --node-id {node_id}" if nats else ""
    state = PurePosixPath(data)
    # systemd makes and owns a directory under /var/lib (StateDirectory); elsewhere it must exist already.
    state_directory = str(state.relative_to(_STATE_ROOT)) if state.is_relative_to(_STATE_ROOT) else ""
    text = _fill(
        "vigil.service",
        prefix=prefix.rstrip("/"),
        config=config,
        data=data,
        mllp=mllp,
        user=user,
        env_file=env_file,
        cluster_args=cluster_args,
        node_id=node_id or "single",
        state_directory=state_directory,
    )
    if not state_directory:
        text = "\n".join(line for line in text.splitlines() if not line.startswith("StateDirectory")) + "\n"
    return text


def kubernetes_manifests(
    *,
    image: str,
    nodes: int = 3,
    storage: str = "50Gi",
    nats_image: str = "nats:2.10-alpine",
    nats_storage: str = "20Gi",
    namespace: str = "vigil",
) -> str:
    """NATS (three JetStream servers) and a StatefulSet of `nodes` Vigil nodes, probed on /healthz and /readyz."""
    for name, value in (("image", image), ("nats_image", nats_image)):
        if not _IMAGE.match(value):
            raise DeployError(f"{name} {value!r} is not an image reference")
    for name, value in (("storage", storage), ("nats_storage", nats_storage)):
        if not _QUANTITY.match(value):
            raise DeployError(f"{name} {value!r} is not a size such as 50Gi")
    if not 1 <= nodes <= 64:
        raise DeployError(f"nodes {nodes}: from 1 to 64")
    if not re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", namespace):
        raise DeployError(f"namespace {namespace!r} is not a Kubernetes name")
    return _fill(
        "kubernetes.yaml",
        image=image,
        nodes=str(nodes),
        storage=storage,
        nats_image=nats_image,
        nats_storage=nats_storage,
        namespace=namespace,
    )


def containerfile() -> str:
    """The image definition (built from the repository's top)."""
    return (_TEMPLATES / "Containerfile").read_text()


def _absolute(name: str, value: str) -> None:
    if not value.startswith("/") or any(c.isspace() for c in value) or "$" in value:
        raise DeployError(f"{name} {value!r}: an absolute path without spaces or '$'")


def _fill(template: str, **values: str) -> str:
    return Template((_TEMPLATES / template).read_text()).substitute(values)
