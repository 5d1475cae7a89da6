"""TLS contexts for MLLP: the listener's (optionally mutual) and `vigil send`'s.

Built from PEM files named in the configuration; TLS 1.2 is the floor (the
level HIPAA guidance and NIST SP 800-52r2 ask of a server).
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Callable
from pathlib import Path

from engine.core.errors import ConfigError
from engine.infra.config import AdminConfig, MLLPConfig, NatsConfig

__all__ = ["client_context", "nats_security", "server_context"]


def server_context(config: MLLPConfig | AdminConfig, base: Path, *, where: str = "mllp") -> ssl.SSLContext | None:
    """A listener's context (MLLP's, the admin endpoint's), or None when no certificate is configured.

    Raises:
        ConfigError: only one of cert and key is given, or a file cannot be loaded.
    """
    if not config.tls_cert_file and not config.tls_key_file:
        if config.tls_client_ca_file:
            raise ConfigError(f"{where}.tls_client_ca_file needs {where}.tls_cert_file and {where}.tls_key_file")
        return None
    if not (config.tls_cert_file and config.tls_key_file):
        raise ConfigError(f"{where}: give both tls_cert_file and tls_key_file, or neither")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    cert, key = base / config.tls_cert_file, base / config.tls_key_file
    _load(f"{where}.tls_cert_file", lambda: context.load_cert_chain(cert, key))
    if config.tls_client_ca_file:
        _load(f"{where}.tls_client_ca_file", lambda: context.load_verify_locations(base / config.tls_client_ca_file))
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def client_context(ca_file: Path | None, cert_file: Path | None = None, key_file: Path | None = None) -> ssl.SSLContext:
    """A verifying client context: the system's CAs, or the given CA; a client certificate for mutual TLS."""
    context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if cert_file is not None:
        _load("--tls-cert", lambda: context.load_cert_chain(cert_file, key_file))
    return context


def nats_security(config: NatsConfig, base: Path) -> dict[str, object]:
    """The nats-py connect options for the broker's credentials and TLS (empty when none are configured).

    Raises:
        ConfigError: a secret's variable is named but unset, a half-given
            certificate pair, or a file that cannot be loaded.
    """
    options: dict[str, object] = {}
    if config.credentials_file:
        path = base / config.credentials_file
        if not path.is_file():
            raise ConfigError(f"nats.credentials_file: {path} does not exist")
        options["user_credentials"] = str(path)
    if config.token_env:
        options["token"] = _secret("nats.token_env", config.token_env)
    if config.user:
        if not config.password_env:
            raise ConfigError("nats.user needs nats.password_env (the variable holding the password)")
        options["user"] = config.user
        options["password"] = _secret("nats.password_env", config.password_env)
    if bool(config.tls_cert_file) != bool(config.tls_key_file):
        raise ConfigError("nats: give both tls_cert_file and tls_key_file, or neither")
    wants_tls = any(s.startswith("tls://") for s in config.servers)
    if wants_tls or config.tls_ca_file or config.tls_cert_file:
        context = ssl.create_default_context(cafile=None)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        if config.tls_ca_file:
            _load("nats.tls_ca_file", lambda: context.load_verify_locations(base / config.tls_ca_file))
        if config.tls_cert_file:
            cert, key = base / config.tls_cert_file, base / config.tls_key_file
            _load("nats.tls_cert_file", lambda: context.load_cert_chain(cert, key))
        options["tls"] = context
    return options


def _secret(key: str, variable: str) -> str:
    value = os.environ.get(variable, "")
    if not value:
        raise ConfigError(f"{key} names ${variable}, which is not set")
    return value


def _load(what: str, load: Callable[[], object]) -> None:
    try:
        load()
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"{what}: cannot load: {getattr(exc, 'strerror', None) or exc}") from None
