"""OTLP export with the `otlp` extra: a real `vigil run` process posts its spans and metrics to a loopback collector.

The collector is a plain HTTP server on 127.0.0.1 that keeps what it is sent;
the payloads are OTLP protobuf, in which span and metric names appear as
plain strings: enough to see what arrived, and that no PHI did.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tests.harness.helpers import hl7
from tests.harness.node_process import ROOT, VIGIL


def test_spans_and_metrics_reach_an_otlp_collector_without_phi(
    tmp_path: Path, collector: tuple[str, dict[str, list[bytes]]]
) -> None:
    """One message through `vigil run --stdin`: its span and the message counter arrive; the canary PHI does not."""
    url, received = collector
    name, mrn = "Qwertyuiopas", "CANARY737373"
    message = hl7(
        "MSH|^~\\&|LAB|GENHOSP|VIGIL|GENHOSP|2026||ORU^R01|OT1|P|2.5.1",
        f"PID|1||{mrn}^^^GENHOSP^MR||{name}^Ada||19230417|F",
        "OBX|1|NM|2823-3^K^LN||6.9|mmol/L||HH",
    )
    env = {**os.environ, "OTEL_EXPORTER_OTLP_ENDPOINT": url}
    done = subprocess.run(
        [VIGIL, "run", "--stdin", "--data", str(tmp_path / "data")],
        input=message,
        capture_output=True,
        cwd=ROOT,
        env=env,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()[-500:]
    traces = b"".join(received.get("/v1/traces", []))
    metrics = b"".join(received.get("/v1/metrics", []))
    assert b"vigil.message" in traces
    assert b"vigil.messages" in metrics
    for payload in (traces, metrics):
        assert name.encode() not in payload
        assert mrn.encode() not in payload
