"""TLS contexts for MLLP: the listener's (optionally mutual) and `vigil send`'s.

Built from PEM files named in the configuration; TLS 1.2 is the floor (the
level HIPAA guidance and NIST SP 800-52r2 ask of a server).
"""

from __future__ import annotations

import ssl
from collections.abc import Callable
from pathlib import Path

from engine.config import MLLPConfig
from engine.errors import ConfigError

__all__ = ["client_context", "server_context"]


def server_context(config: MLLPConfig, base: Path) -> ssl.SSLContext | None:
    """The listener's context, or None when no certificate is configured.

    Raises:
        ConfigError: only one of cert and key is given, or a file cannot be loaded.
    """
    if not config.tls_cert_file and not config.tls_key_file:
        if config.tls_client_ca_file:
            raise ConfigError("mllp.tls_client_ca_file needs mllp.tls_cert_file and mllp.tls_key_file")
        return None
    if not (config.tls_cert_file and config.tls_key_file):
        raise ConfigError("mllp: give both tls_cert_file and tls_key_file, or neither")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    _load(
        "mllp.tls_cert_file", lambda: context.load_cert_chain(base / config.tls_cert_file, base / config.tls_key_file)
    )
    if config.tls_client_ca_file:
        _load("mllp.tls_client_ca_file", lambda: context.load_verify_locations(base / config.tls_client_ca_file))
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def client_context(ca_file: Path | None, cert_file: Path | None = None, key_file: Path | None = None) -> ssl.SSLContext:
    """A verifying client context: the system's CAs, or the given CA; a client certificate for mutual TLS."""
    context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if cert_file is not None:
        _load("--tls-cert", lambda: context.load_cert_chain(cert_file, key_file))
    return context


def _load(what: str, load: Callable[[], object]) -> None:
    try:
        load()
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"{what}: cannot load: {getattr(exc, 'strerror', None) or exc}") from None
