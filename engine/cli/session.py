"""The CLI's side of a session: where its token is kept, and who it asks.

A token lives in a file readable only by its OS user (`$VIGIL_SESSION_FILE`,
else one per data directory under `$XDG_STATE_HOME/vigil` or
`~/.local/state/vigil`), with the device it is bound to. Every request that
needs a session carries both.

Who decides: the running node, over its admin socket. When no node runs, the
CLI is the authority itself over the same store (`auth.db`) and the same log
(taking the log's lock, which a running node would hold): the same checks,
and the same audit events appended before anything is shown.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import socket
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import anyio
import click
import msgspec

from engine.auth import OPERATIONS, STORE_FILE, AuthEndpoint, AuthService, AuthStore, Permission
from engine.cli.context import Context
from engine.core.errors import ConfigError
from engine.core.model import Envelope
from engine.infra.admin_socket import AdminError, NodeNotRunningError, request, request_remote
from engine.infra.config import split_address
from engine.infra.tls import client_context
from engine.wal import WALLockedError, audit_key_from_env, open_wal

__all__ = [
    "audit_key",
    "audited",
    "authorized",
    "call",
    "device_of",
    "forget_session",
    "keep_session",
    "node_or",
    "session_file",
]


def session_file(obj: Context, data_dir: Path) -> Path:
    """Where this OS user's session with the node (of `data_dir`, or `[workstation] node`) is kept."""
    explicit = os.environ.get("VIGIL_SESSION_FILE")
    if explicit:
        return Path(explicit)
    state = Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state")
    node = obj.config.workstation.node or str(data_dir.resolve())
    tag = hashlib.sha256(node.encode()).hexdigest()[:16]
    return state / "vigil" / f"session-{tag}.json"


def device_of(obj: Context) -> str:
    """The workstation's device id: from `[workstation]`, else the host's name."""
    return obj.config.workstation.device or socket.gethostname()


def keep_session(obj: Context, data_dir: Path, token: str, device: str, user: str) -> None:
    path = session_file(obj, data_dir)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    body = msgspec.json.encode({"token": token, "device": device, "user": user})
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(body)


def forget_session(obj: Context, data_dir: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        session_file(obj, data_dir).unlink()


def _credentials(obj: Context, data_dir: Path) -> dict[str, str]:
    try:
        saved = msgspec.json.decode(session_file(obj, data_dir).read_bytes())
    except (OSError, msgspec.DecodeError):
        return {"token": "", "device": device_of(obj)}
    return {"token": str(saved.get("token", "")), "device": device_of(obj)}


def call(obj: Context, data_dir: Path, operation: str, **fields: Any) -> Any:
    """One authenticated request: to the running node, else answered here over the same store and log.

    Raises:
        click.ClickException: refused (the one-line reason), or unreachable.
    """
    body = {"auth": _credentials(obj, data_dir), **fields}
    try:
        return _ask(obj, data_dir, operation, body)
    except NodeNotRunningError:
        return _here(obj, data_dir, operation, body)
    except AdminError as exc:
        raise click.ClickException(str(exc)) from None


def node_or(obj: Context, data_dir: Path, operation: str, here: Callable[[], Any], **fields: Any) -> Any:
    """Ask the running node (authenticated); when none runs, `here()` answers (it authorizes itself)."""
    try:
        return _ask(obj, data_dir, operation, {"auth": _credentials(obj, data_dir), **fields})
    except NodeNotRunningError:
        return here()
    except AdminError as exc:
        raise click.ClickException(str(exc)) from None


def _ask(obj: Context, data_dir: Path, operation: str, body: dict[str, Any]) -> Any:
    """The node of `[workstation] node` over TLS, else the one on `data_dir` over its Unix socket."""
    remote = obj.config.workstation.node
    if not remote:
        return request(data_dir, operation, **body)
    workstation = obj.config.workstation
    base = obj.base_dir()
    try:
        address = split_address(remote, "workstation.node")
        context = client_context(
            base / workstation.tls_ca_file if workstation.tls_ca_file else None,
            base / workstation.tls_cert_file if workstation.tls_cert_file else None,
            base / workstation.tls_key_file if workstation.tls_key_file else None,
        )
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    return request_remote(address, context, operation, **body)


def authorized(
    obj: Context,
    data_dir: Path,
    permission: Permission,
    *,
    patient: str = "",
    action: str = "",
    reads_files: bool = True,
) -> Any:
    """Ask before reading what holds PHI (the log, the quarantine): allowed and audited, or refused.

    `reads_files`: the command then reads the data directory itself, which only
    the node's own host has: refused at once when the node is a remote one.
    """
    if reads_files and obj.config.workstation.node:
        raise click.ClickException("this command reads the node's data directory: run it on the node's host")
    return call(obj, data_dir, "authorize", permission=permission.value, patient=patient, action=action)


def audited(obj: Context, data_dir: Path, permission: Permission, action: str, patients: list[str]) -> None:
    """Record that a listing showed these patients (one audit event each), before it is shown."""
    if patients:
        call(obj, data_dir, "accessed", permission=permission.value, action=action, patients=patients)


def audit_key(obj: Context) -> bytes | None:
    """The audit key from the variable the configuration names (None when unset); a bad one is one line."""
    try:
        return audit_key_from_env(obj.config.audit.key_env)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None


def _here(obj: Context, data_dir: Path, operation: str, body: dict[str, Any]) -> Any:
    """No node runs: this process decides, over the data directory's store, and audits into its log."""
    if operation not in OPERATIONS:
        raise click.ClickException(f"no node is running on {data_dir}")
    if operation != "user_add" and not (data_dir / STORE_FILE).exists():
        # Only the first account may create a store (and a log): anything else here is a wrong --data.
        raise click.ClickException(f"no accounts on {data_dir}: add the first administrator with `vigil user add`")
    key = audit_key(obj)

    async def answer() -> Any:
        # A refusal is carried out of the log's task group as a value, not raised through it
        # (where it would arrive wrapped in an exception group).
        async with open_wal(data_dir / "wal", obj.config.wal, audit_key=key) as log:

            async def sink(envelopes: Sequence[Envelope]) -> None:
                await log.append(envelopes)

            store = await anyio.to_thread.run_sync(AuthStore.open_private, data_dir)
            service = AuthService(store, obj.config.auth)
            endpoint = AuthEndpoint(service, sink, node=obj.config.node.id, log_denials=False)
            try:
                return await endpoint.handlers()[operation]({**body, "network": False})  # this host, by definition
            except AdminError as refused:
                return refused
            finally:
                endpoint.service.flush()
                store.close()

    try:
        answered = anyio.run(answer)
    except WALLockedError:
        raise click.ClickException(f"the log on {data_dir} is busy (a node is starting): retry") from None
    except OSError as exc:  # read-only media, say: no look at PHI goes unrecorded, so none is shown
        raise click.ClickException(
            f"cannot write to the log on {data_dir} ({exc.strerror}): every look is recorded there before it is shown"
        ) from None
    if isinstance(answered, AdminError):
        raise click.ClickException(str(answered))
    return answered
