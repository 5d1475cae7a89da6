"""The node's HTTP face made from its parts: what each route of `engine.web` is handed.

The wiring calls `http_server` once the log and the admin requests exist;
nothing here reaches into the node beyond what it is given.
"""

from __future__ import annotations

import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from actors import RecordView
from engine.auth import AuthEndpoint
from engine.infra.admin_socket import AdminError
from engine.infra.config import Config, split_address
from engine.ingress.mllp_answers import MLLPAnswers
from engine.node.requests import NodeRequests
from engine.web import (
    ConsoleApi,
    FhirReads,
    Gate,
    Handle,
    HttpServer,
    IngestApi,
    IngestOne,
    LoginLimiter,
    Probes,
    Readiness,
    RecordUnavailableError,
    Report,
    web_app,
)

__all__ = ["http_server"]


def http_server(
    config: Config,
    config_dir: Path,
    *,
    auth: AuthEndpoint,
    requests: NodeRequests,
    answers: MLLPAnswers,
    ingest: IngestOne,
    ready: Readiness,
    report: Report,
    handle: Handle,
) -> HttpServer:
    """The HTTP server of `[http]`, its routes handed the node's parts."""
    settings = config.http

    async def read(key: str, known_at: str | None, as_of: str | None) -> RecordView:
        try:
            return await requests.served_patient(key, known_at, as_of)
        except AdminError as exc:
            raise RecordUnavailableError(str(exc)) from None

    gate = Gate(auth.authorize_client)
    app = web_app(
        Probes(ready, report),
        FhirReads(read, gate, software="Vigil", version=_version(), kept_observations=settings.observations_kept),
        IngestApi(answers.acknowledge, ingest, gate, body_bytes_max=settings.body_bytes_max),
        ConsoleApi(
            handle,
            LoginLimiter(settings.console_logins_max, 60.0, time.monotonic),
            secure=bool(settings.tls_cert_file),
            break_glass_reasons=config.auth.break_glass_reasons,
        ),
    )
    tls = None
    if settings.tls_cert_file:
        tls = (config_dir / settings.tls_cert_file, config_dir / settings.tls_key_file)
    return HttpServer(
        app,
        split_address(settings.listen, "http.listen"),
        tls=tls,
        keep_alive_s=settings.keep_alive_s,
        grace_s=settings.grace_s,
    )


def _version() -> str:
    try:
        return version("vigil")
    except PackageNotFoundError:
        return "unknown"
