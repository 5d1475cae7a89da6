"""A downstream HTTP system in a process of its own: a FHIR endpoint that checks every Bundle, and HL7 v2 over HTTP.

Run as `python -m tests.harness.http_receiver --record FILE --control FILE`.
It prints `listening on PORT` once bound (the standard library's threading
HTTP server). Nobody here wrote what judges a Bundle: `fhir.resources`
(R4B, the same as R4 for these resources) validates it; then the receiver
checks what a FHIR server would refuse in a transaction: each entry a
`PUT Type/id` that matches its resource, no target twice, every reference
to a resource of the same Bundle.

- `POST /fhir` with a Bundle: 200 and a transaction-response Bundle, or 400
  and an OperationOutcome naming the fault.
- `POST /hl7`: the message is answered with python-hl7's ACK.

Every accepted request is appended to the record file (JSON lines: time,
path, content type, traceparent, the body in base64) before the answer.
The control file (JSON, read per request) says how to answer:
`{"mode": "ok" | "503" | "stall", "refuse": [patient identifiers answered 422]}`.
"""

from __future__ import annotations

import argparse
import base64
import json
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, final

import hl7

from tests.harness.downstream_process import DownstreamProcess
from tests.harness.fhir_checks import check_transaction

__all__ = ["HttpReceiver", "Posted"]


@final
class Posted:
    """One request as the receiver recorded it."""

    __slots__ = ("at", "body", "content_type", "path", "traceparent")

    def __init__(self, doc: dict[str, Any]) -> None:
        self.at: float = doc["at"]
        self.path: str = doc["path"]
        self.content_type: str = doc["content_type"]
        self.traceparent: str = doc["traceparent"]
        self.body = base64.b64decode(doc["body"])

    def json(self) -> dict[str, Any]:
        doc: dict[str, Any] = json.loads(self.body)
        return doc


@final
class HttpReceiver(DownstreamProcess):
    """The receiver process, from the test's side."""

    def __init__(self, directory: Path) -> None:
        super().__init__(
            "tests.harness.http_receiver", directory / "posted.ndjson", directory / "http-control.json", "ok"
        )

    def posted(self) -> list[Posted]:
        if not self.record.exists():
            return []
        return [Posted(json.loads(line)) for line in self.record.read_text().splitlines() if line]


def _patient_values(body: bytes) -> set[str]:
    doc = json.loads(body)
    return {
        ident.get("value", "")
        for entry in doc.get("entry", [])
        if entry["resource"]["resourceType"] == "Patient"
        for ident in entry["resource"].get("identifier", [])
    }


def _handler(record: Path, control: Path, lock: threading.Lock) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as a real server would

        def log_message(self, *_args: object) -> None:
            return

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            try:
                settings = json.loads(control.read_text())
            except (OSError, ValueError):
                settings = {"mode": "ok", "refuse": []}
            if settings["mode"] == "stall":
                time.sleep(3600)
            if settings["mode"] == "503":
                self._answer(503, "application/fhir+json", _outcome("transient", "try again later"))
                return
            if self.path == "/hl7":
                self._record(body)
                ack = hl7.parse(body.decode("utf-8", errors="replace")).create_ack("AA")
                self._answer(200, "x-application/hl7-v2+er7", str(ack).encode())
                return
            fault = check_transaction(body)
            if fault is not None:
                self._answer(400, "application/fhir+json", _outcome("structure", fault))
                return
            if _patient_values(body) & set(settings["refuse"]):
                self._answer(422, "application/fhir+json", _outcome("business-rule", "unknown patient"))
                return
            self._record(body)
            entries = [{"response": {"status": "200 OK"}} for _ in json.loads(body).get("entry", [])]
            response = {"resourceType": "Bundle", "type": "transaction-response", "entry": entries}
            self._answer(200, "application/fhir+json", json.dumps(response).encode())

        def _record(self, body: bytes) -> None:
            line = {
                "at": time.time(),
                "path": self.path,
                "content_type": self.headers.get("Content-Type", ""),
                "traceparent": self.headers.get("traceparent", ""),
                "body": base64.b64encode(body).decode(),
            }
            with lock, record.open("a") as out:
                out.write(json.dumps(line) + "\n")

        def _answer(self, status: int, content_type: str, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    return Handler


def _outcome(code: str, text: str) -> bytes:
    issue = {"severity": "error", "code": code, "diagnostics": text}
    return json.dumps({"resourceType": "OperationOutcome", "issue": [issue]}).encode()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--record", type=Path, required=True)
    parser.add_argument("--control", type=Path, required=True)
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    server = ThreadingHTTPServer(("127.0.0.1", args.port), _handler(args.record, args.control, threading.Lock()))
    server.daemon_threads = True
    print(f"listening on {server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
