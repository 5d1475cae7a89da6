"""`vigil deploy`: each file checked by a tool that knows its format, not by eye.

The systemd unit by `systemd-analyze verify` (and its hardening scored by
`systemd-analyze security`), the Kubernetes manifests against the API's own
JSON schemas (kubernetes-validate) and for what Vigil needs of them, the
node's configuration in them by Vigil's own loader. The container image
definition is checked for what it copies and runs; it is not built here
(no container engine runs on these machines).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from engine.deploy import DeployError, containerfile, kubernetes_manifests, systemd_unit
from engine.infra.config import decode_config
from tests.harness.node_process import ROOT, VIGIL

_SYSTEMD = shutil.which("systemd-analyze")


def _unit(tmp_path: Path, **changes: str) -> Path:
    values = {"prefix": str(ROOT), "config": str(ROOT / "config.toml"), "data": "/var/lib/vigil", **changes}
    unit = tmp_path / "vigil.service"
    unit.write_text(systemd_unit(**values))
    return unit


@pytest.mark.skipif(_SYSTEMD is None, reason="systemd-analyze is not on this machine")
@pytest.mark.parametrize("cluster", [{}, {"nats": "nats://10.0.0.5:4222,nats://10.0.0.6:4222", "node_id": "node-a"}])
def test_the_unit_verifies_and_its_hardening_scores_ok(tmp_path: Path, cluster: dict[str, str]) -> None:
    unit = _unit(tmp_path, **cluster)
    assert _SYSTEMD is not None
    verified = subprocess.run([_SYSTEMD, "verify", str(unit)], capture_output=True, text=True, check=False)
    assert verified.returncode == 0, verified.stderr
    assert "vigil.service" not in verified.stderr  # no warning about this unit's own lines
    scored = subprocess.run(
        [_SYSTEMD, "security", "--offline=true", str(unit)], capture_output=True, text=True, check=False
    )
    exposure = re.search(r"Overall exposure level for vigil\.service: ([0-9.]+)", scored.stdout)
    assert exposure is not None, scored.stdout[-2000:] + scored.stderr
    assert float(exposure.group(1)) <= 2.0  # systemd calls under 2.0 "OK"; a default unit scores 9.6
    if cluster:
        assert "--nats nats://10.0.0.5:4222,nats://10.0.0.6:4222 --node-id node-a" in unit.read_text()


def test_a_data_directory_outside_var_lib_is_not_a_state_directory(tmp_path: Path) -> None:
    text = _unit(tmp_path, data="/srv/vigil").read_text()
    assert "StateDirectory" not in text
    assert "ReadWritePaths=/srv/vigil" in text


@pytest.mark.parametrize(
    ("changes", "why"),
    [
        ({"user": "root; rm"}, "not a Unix user name"),
        ({"data": "relative/dir"}, "an absolute path"),
        ({"mllp": "everywhere"}, "not HOST:PORT"),
        ({"nats": "nats://a:4222"}, "needs both"),
    ],
)
def test_a_value_that_would_break_the_unit_is_refused(changes: dict[str, str], why: str) -> None:
    values = {"prefix": "/opt/vigil", "config": "/etc/vigil/config.toml", "data": "/var/lib/vigil", **changes}
    with pytest.raises(DeployError, match=why):
        systemd_unit(**values)


def _manifests(nodes: int = 3) -> list[dict[str, Any]]:
    return list(yaml.safe_load_all(kubernetes_manifests(image="registry.example.org/vigil:1.0", nodes=nodes)))


@pytest.mark.parametrize("version", ["1.28", "1.30"])
def test_every_manifest_is_valid_against_the_kubernetes_schemas(version: str) -> None:
    docs = _manifests()
    assert sorted(d["kind"] for d in docs) == sorted(
        ["ConfigMap", "ConfigMap", "Service", "Service", "Service", "StatefulSet", "StatefulSet"]
        + ["PodDisruptionBudget"] * 2
    )
    for doc in docs:
        kubernetes_validate.validate(doc, version, strict=True)


def test_the_nodes_are_probed_where_the_node_answers_and_run_as_the_cluster_needs() -> None:
    docs = {(d["kind"], d["metadata"]["name"]): d for d in _manifests(nodes=5)}
    vigil = docs["StatefulSet", "vigil"]["spec"]
    assert vigil["replicas"] == 5
    [container] = vigil["template"]["spec"]["containers"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    args = container["args"]
    assert args[args.index("--node-id") + 1] == "$(POD_NAME)"
    servers = args[args.index("--nats") + 1].split(",")
    assert len(servers) == docs["StatefulSet", "nats"]["spec"]["replicas"] == 3
    # The node's configuration is Vigil's own to judge (HTTPS off loopback, its keys' paths).
    config = decode_config(docs["ConfigMap", "vigil-config"]["data"]["config.toml"])
    assert config.http.listen.endswith(":8443")
    assert config.http.tls_cert_file.startswith("/etc/vigil/tls/")
    assert "sync_interval: always" in docs["ConfigMap", "nats-config"]["data"]["nats.conf"]


def test_the_image_copies_what_exists_and_runs_the_cli_it_installs() -> None:
    text = containerfile()
    copied = [
        part
        for line in text.splitlines()
        if line.startswith("COPY ") and "--from" not in line
        for part in line.split()[1:-1]
    ]
    assert copied
    assert all((ROOT / name).exists() for name in copied), copied
    entry = re.search(r'ENTRYPOINT \["vigil", "--config", "([^"]+)"\]', text)
    assert entry is not None
    assert "USER 10001" in text
    cmd = re.search(r"CMD \[(.*)\]", text)
    assert cmd is not None
    args = [a.strip().strip('"') for a in cmd.group(1).split(",")]
    helped = subprocess.run([VIGIL, *args[:1], "--help"], capture_output=True, text=True, check=False)
    assert helped.returncode == 0
    assert all(option in helped.stdout for option in args[1:] if option.startswith("--"))


def test_the_cli_writes_each_file_and_refuses_a_bad_value(tmp_path: Path) -> None:
    made = subprocess.run(
        [VIGIL, "deploy", "kubernetes", "--image", "registry.example.org/vigil:2", "--nodes", "2"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "replicas: 2" in made.stdout
    refused = subprocess.run(
        [VIGIL, "deploy", "kubernetes", "--image", "registry.example.org/vigil:2", "--storage", "lots"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert refused.returncode == 1
    assert "storage 'lots' is not a size such as 50Gi" in refused.stderr
