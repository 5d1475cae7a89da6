"""`vigil cluster status|log`: the cluster as the broker holds it, from any host that reaches NATS.

Neither needs a session: they show nodes, partitions, leases and message
ids (metadata), never a patient or message content.
"""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import anyio
import click
import msgspec
import nats
import nats.errors
from rich.table import Table

from engine.cli.console import DataConsole
from engine.cli.context import JSON_OPTION, Context, emit_json
from engine.cluster import read_leases, read_log, read_members, read_stream
from engine.infra.nats_client import NatsUnavailableError, connect_once
from engine.infra.tls import nats_security

__all__ = ["cluster"]

_T = TypeVar("_T")
NATS_OPTION = click.option("--nats", "nats_urls", help="NATS URL[,URL...] (default: cluster.servers or nats.servers).")


_CONNECT_DEADLINE_S = 10.0  # an operator waits this long at most for an answer from NATS


@click.group("cluster")
def cluster() -> None:
    """The cluster: members, partition leases, the replicated log."""


def _with_js(obj: Context, nats_urls: str | None, work: Callable[[Any], Awaitable[_T]]) -> _T:
    obj.join_cluster(nats_urls, None)
    config = obj.config
    servers = list(config.cluster.servers or config.nats.servers)
    if not servers:
        raise click.ClickException("no NATS servers: give --nats URL, or cluster.servers in the configuration")
    security = nats_security(config.nats, obj.base_dir())

    async def go() -> _T:
        try:
            client = await connect_once(servers, security=security, deadline_s=_CONNECT_DEADLINE_S)
        except NatsUnavailableError as exc:
            raise click.ClickException(str(exc)) from None
        try:
            return await work(client.jetstream(timeout=5))
        except nats.errors.Error as exc:
            raise click.ClickException(f"NATS refused: {exc}") from None
        finally:
            await client.close()

    return anyio.run(go)


@cluster.command("status")
@NATS_OPTION
@JSON_OPTION
@click.pass_obj
def status(obj: Context, nats_urls: str | None, *, as_json: bool) -> None:
    """Nodes and their heartbeats, each partition's owner, epoch and lease age, the stream's replicas."""
    config = obj.config.cluster

    async def read(js: Any) -> dict[str, Any]:
        return {
            "members": await read_members(js, config),
            "leases": await read_leases(js, config),
            "stream": await read_stream(js, config),
        }

    report = _with_js(obj, nats_urls, read)
    if as_json:
        emit_json(report)
        return
    console = DataConsole(soft_wrap=True)
    nodes = Table(title="Members")
    for name in ("node", "heartbeat age s", "serving", "partitions", "last LSN", "replication lag", "nats"):
        left = name in ("node", "partitions", "nats")
        nodes.add_column(name, justify="left" if left else "right", overflow="fold")
    for m in report["members"]:
        listed = ", ".join(str(p) for p in m.serving)
        lag = f"{m.replication_lag_records:,}"
        nodes.add_row(m.node, f"{m.heartbeat_age_s:.1f}", str(len(m.serving)), listed, f"{m.last_lsn:,}", lag, m.nats)
    console.print(nodes)
    leases = Table(title="Partition leases")
    for name in ("partition", "owner", "epoch", "lease age s"):
        leases.add_column(name, justify="right" if name != "owner" else "left")
    for lease in report["leases"]:
        age = "-" if lease.lease_age_s is None else f"{lease.lease_age_s:.1f}"
        leases.add_row(str(lease.partition), lease.owner or "(none)", str(lease.epoch), age)
    console.print(leases)
    stream = report["stream"]
    if stream is None:
        console.print(f"stream {config.stream}: not created yet (the first node makes it)")
    else:
        console.print(
            f"stream {stream.stream}: {stream.replicas} replicas ({stream.replicas_current} current), "
            f"{stream.storage} storage, leader {stream.leader or '-'}; {stream.messages:,} messages, "
            f"{stream.bytes:,} bytes"
        )


@cluster.command("log")
@NATS_OPTION
@click.option("--partition", type=int, help="Only this partition.")
@JSON_OPTION
@click.pass_obj
def log(obj: Context, nats_urls: str | None, partition: int | None, *, as_json: bool) -> None:
    """Every replicated record (metadata: partition, epoch, node, LSN, message id, lane), in stream order."""
    config = obj.config.cluster

    async def read(js: Any) -> int:
        count = 0
        async for row in read_log(js, config, partition=partition):
            count += 1
            if as_json:
                sys.stdout.write(msgspec.json.encode(row).decode() + "\n")
            else:
                sys.stdout.write(
                    f"{row.stream_seq:>8} p{row.partition:<4} e{row.epoch:<4} {row.node:<12} "
                    f"LSN {row.lsn:<8} {row.lane:<8} {row.message_type:<10} {row.message_id}\n"
                )
        return count

    count = _with_js(obj, nats_urls, read)
    if not as_json:
        sys.stdout.write(f"{count:,} records\n")
