"""MLLP over TLS with a real node process: `vigil send` verifies the listener; mutual TLS refuses strangers.

Certificates come from a throwaway CA (trustme), written to the test's temp dir.
"""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

import pytest
import trustme

from engine.core.mllp import frame
from tests.harness.node_process import ROOT, VIGIL, message, node


@pytest.fixture
def pki(tmp_path: Path) -> dict[str, Path]:
    """A CA, the node's certificate for 127.0.0.1, and a client certificate, as PEM files."""
    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1")
    client = ca.issue_cert("lab-analyser.genhosp.example")
    files = {
        "ca": tmp_path / "ca.pem",
        "cert": tmp_path / "node.pem",
        "key": tmp_path / "node.key",
        "client": tmp_path / "client.pem",
    }
    ca.cert_pem.write_to_path(str(files["ca"]))
    server.cert_chain_pems[0].write_to_path(str(files["cert"]))
    server.private_key_pem.write_to_path(str(files["key"]))
    client.private_key_and_cert_chain_pem.write_to_path(str(files["client"]))
    return files


def _config(tmp_path: Path, pki: dict[str, Path], *, mutual: bool) -> Path:
    config = tmp_path / "vigil.toml"
    # Paths relative to the configuration file, as an operator would write them.
    lines = ["[mllp]", 'tls_cert_file = "node.pem"', 'tls_key_file = "node.key"']
    if mutual:
        lines.append('tls_client_ca_file = "ca.pem"')
    config.write_text("\n".join(lines) + "\n")
    return config


def _send(port: int, payload: Path, *tls: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [VIGIL, "send", str(payload), "--to", f"127.0.0.1:{port}", "--json", "--timeout-s", "10", *tls],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        check=False,
    )


def test_tls_listener_acks_a_verified_client_and_ignores_plain_mllp(tmp_path: Path, pki: dict[str, Path]) -> None:
    """Plain MLLP at a TLS port gets no ACK and nothing is appended; a TLS client gets AA."""
    payload = tmp_path / "one.hl7"
    payload.write_bytes(message(1))
    with node(tmp_path / "data", config=_config(tmp_path, pki, mutual=False)) as (_proc, port):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as plain:
            plain.sendall(frame(message(2)))
            plain.settimeout(5)
            try:
                answer = plain.recv(65536)
            except OSError:
                answer = b""
            assert b"MSA" not in answer
        unverified = _send(port, payload, "--tls")  # the system CAs do not know the throwaway CA
        assert unverified.returncode != 0
        assert "CERTIFICATE_VERIFY_FAILED" in unverified.stderr
        done = _send(port, payload, "--tls-ca", str(pki["ca"]))
        assert done.returncode == 0, done.stderr
        assert '"code": "AA"' in done.stdout or '"code":"AA"' in done.stdout


def test_mutual_tls_refuses_a_client_without_a_certificate(tmp_path: Path, pki: dict[str, Path]) -> None:
    """With a client CA configured, only a peer presenting a certificate it signed is served."""
    payload = tmp_path / "one.hl7"
    payload.write_bytes(message(3))
    with node(tmp_path / "data", config=_config(tmp_path, pki, mutual=True)) as (_proc, port):
        anonymous = _send(port, payload, "--tls-ca", str(pki["ca"]))
        assert anonymous.returncode != 0
        known = _send(port, payload, "--tls-ca", str(pki["ca"]), "--tls-cert", str(pki["client"]))
        assert known.returncode == 0, known.stderr


def test_half_a_tls_configuration_is_one_clear_line(tmp_path: Path) -> None:
    """A certificate without its key is refused at start, naming the keys."""
    config = tmp_path / "vigil.toml"
    config.write_text('[mllp]\ntls_cert_file = "node.pem"\n')
    done = subprocess.run(
        [VIGIL, "--config", str(config), "run", "--mllp", "127.0.0.1:0", "--data", str(tmp_path / "data")],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        check=False,
    )
    assert done.returncode != 0
    assert "tls_cert_file and tls_key_file" in done.stderr.strip().splitlines()[-1]
