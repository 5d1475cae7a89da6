"""`vigil run` (a node) and `vigil send` (an MLLP client that prints each ACK)."""

from __future__ import annotations

import collections
import functools
import glob
import socket
import ssl
import sys
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import anyio
import click
import msgspec
from rich.progress import Progress
from rich.table import Table

from actors import SupervisorGaveUp
from engine.cli.console import DataConsole, styled
from engine.cli.context import Context
from engine.cli.progress import scan_progress
from engine.core.errors import ConfigError, InputError, first_leaf
from engine.core.hl7 import parse
from engine.core.mllp import Frame, MLLPDecoder, frame
from engine.core.model import Kind
from engine.core.outcome import Outcome
from engine.core.split import split_input
from engine.infra.config import DEFAULT_CONFIG_PATH, split_address
from engine.infra.logging_setup import configure_logging
from engine.infra.otel_export import install_otlp_export
from engine.infra.tls import client_context, server_context
from engine.node import Node
from engine.wal import WALCorruptError, WALLockedError

__all__ = ["run", "send"]


def _address(value: str) -> tuple[str, int]:
    try:
        return split_address(value, "address")
    except ConfigError as exc:
        raise click.BadParameter(str(exc)) from None


@click.command("run")
@click.option(
    "--data",
    type=click.Path(file_okay=False, path_type=Path),
    envvar="VIGIL_DATA",
    help="The data directory (default: $VIGIL_DATA, else node.data_dir from the configuration).",
)
@click.option("--mllp", "mllp", help="Listen for MLLP on HOST:PORT (port 0: any free port).")
@click.option("--stdin", "use_stdin", is_flag=True, help="Ingest standard input, answer it, and stop.")
@click.option("--watch", type=click.Path(file_okay=False, path_type=Path), help="A drop folder to ingest from.")
@click.option("--nats", "nats_urls", help="Join a cluster over these NATS servers (URL[,URL...]).")
@click.option("--node-id", help="This node's id in the cluster (default: node.id from the configuration).")
@click.pass_obj
def run(
    obj: Context,
    data: Path | None,
    mllp: str | None,
    watch: Path | None,
    *,
    nats_urls: str | None,
    node_id: str | None,
    use_stdin: bool,
) -> None:
    """Run a node: MLLP until SIGTERM/SIGINT, or stdin until its end.

    With --stdin, one JSON line per message says what became of it (accepted
    with its LSN, retry, rejected with the reason and quarantine id); the exit
    status is 0 only when every message is durable.
    """
    obj.join_cluster(nats_urls, node_id)
    if use_stdin and obj.config.cluster.enabled:
        raise click.UsageError("--stdin runs a single node: a cluster node takes --mllp, --watch or NATS subjects")
    nats = bool(obj.config.nats.servers and obj.config.nats.subjects)
    http = bool(obj.config.http.listen)
    if use_stdin and http:
        raise click.UsageError(
            "--stdin runs until its input ends: [http] listen serves a node run with --mllp or alone"
        )
    if use_stdin == bool(mllp or watch or nats or http):
        raise click.UsageError(
            "give --stdin alone, or --mllp HOST:PORT and/or --watch DIR and/or [nats] or [http] in the config"
        )
    configure_logging("info", json=True)
    shutdown_export = install_otlp_export(obj.config.node.id)
    try:
        base = (obj.config_path or DEFAULT_CONFIG_PATH).resolve().parent
        if use_stdin:
            _run_stdin(Node(obj.config, obj.data_dir(data), config_dir=base))
            return
        tls = server_context(obj.config.mllp, base) if mllp else None
        # On a terminal, a bar while a large log is recovered; it goes once the node is ready.
        with ExitStack() as recovering:
            progress = recovering.enter_context(scan_progress("recovering the log"))
            node = Node(obj.config, obj.data_dir(data), recovery_progress=progress, config_dir=base)
            anyio.run(_serve, node, _address(mllp) if mllp else None, watch, tls, recovering.close)
    except _REFUSALS as exc:
        raise click.ClickException(str(exc)) from None
    except BaseExceptionGroup as group:
        # A source task's refusal (a missing NATS stream) arrives wrapped by the task group.
        refusals, _others = group.split(_REFUSALS)
        if refusals is None:
            raise
        raise click.ClickException(str(first_leaf(refusals))) from None
    finally:
        if shutdown_export is not None:
            shutdown_export()


_REFUSALS = (WALLockedError, WALCorruptError, ConfigError, SupervisorGaveUp, OSError)


def _run_stdin(node: Node) -> None:
    limit = node.config.ingest.input_bytes_max
    raw = sys.stdin.buffer.read(limit + 1)
    if len(raw) > limit:
        raise click.ClickException(
            f"standard input is larger than {limit:,} bytes (ingest.input_bytes_max): nothing was ingested; "
            "split it, or raise the limit"
        )
    results = anyio.run(functools.partial(node.run, stdin=raw))
    out = sys.stdout.buffer
    for result in results:
        out.write(msgspec.json.encode(result) + b"\n")
    out.flush()
    if any(r.outcome is not Outcome.ACCEPTED for r in results):
        sys.exit(1)


async def _serve(
    node: Node,
    address: tuple[str, int] | None,
    watch: Path | None,
    tls: ssl.SSLContext | None,
    recovered: Callable[[], None],
) -> None:
    async with anyio.create_task_group() as tg:
        port = await tg.start(functools.partial(node.run, mllp=address, watch=watch, mllp_tls=tls))
        recovered()
        # The line operators (and tests) wait for: the node takes messages now.
        if address is not None:
            sys.stdout.write(f"vigil: listening on {address[0]}:{port}{' (TLS)' if tls else ''}\n")
        if watch is not None:
            sys.stdout.write(f"vigil: watching {watch}\n")
        if node.config.cluster.enabled:
            sys.stdout.write(f"vigil: node {node.config.node.id} joining the cluster\n")
        if node.http_port is not None:
            host = node.config.http.listen.rpartition(":")[0]
            scheme = "https" if node.config.http.tls_cert_file else "http"
            sys.stdout.write(f"vigil: HTTP on {scheme}://{host}:{node.http_port}\n")
        if node.admin_port is not None:
            host = node.config.admin.listen.rpartition(":")[0]
            sys.stdout.write(f"vigil: admin endpoint on {host}:{node.admin_port} (TLS)\n")
        for subject in node.config.nats.subjects if node.config.nats.servers else ():
            sys.stdout.write(f"vigil: consuming NATS {subject.mode} subject {subject.subject}\n")
        sys.stdout.flush()


@click.command("send")
@click.argument("sources", metavar="FILE|FOLDER|GLOB|-...", nargs=-1, required=True)
@click.option("--to", "to", required=True, help="HOST:PORT of an MLLP listener.")
@click.option("--timeout-s", default=30.0, show_default=True, help="How long to wait for each ACK.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per message.")
@click.option("--tls", "use_tls", is_flag=True, help="Speak TLS, verifying the listener against the system's CAs.")
@click.option("--tls-ca", type=click.Path(dir_okay=False, path_type=Path), help="Speak TLS; trust this CA (PEM).")
@click.option("--tls-cert", type=click.Path(dir_okay=False, path_type=Path), help="A client certificate (mutual TLS).")
@click.option("--tls-key", type=click.Path(dir_okay=False, path_type=Path), help="The client certificate's key.")
def send(
    sources: tuple[str, ...],
    to: str,
    *,
    timeout_s: float,
    tls_ca: Path | None,
    tls_cert: Path | None,
    tls_key: Path | None,
    as_json: bool,
    use_tls: bool,
) -> None:
    """Send each HL7 v2 message of the files over one MLLP connection, each after the last one's ACK.

    A FOLDER sends the files in it, by name; a GLOB (`feeds/*.hl7`) the files
    it matches; `-` standard input. Prints each ACK (or, past 40 messages,
    those that are not AA/CA) and a summary. Exit 1 unless all are AA/CA.
    """
    inputs = [(name, _read_source(name, path)) for name, path in _expand(sources)]
    host, port = _address(to)
    try:
        tls = client_context(tls_ca, tls_cert, tls_key) if use_tls or tls_ca or tls_cert else None
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    pieces = [(name, piece) for name, raw in inputs for piece in split_input(raw)]
    rows: list[dict[str, Any]] = []
    try:
        with _connect(host, port, timeout_s, tls) as conn, _progress(len(pieces), quiet=as_json) as advance:
            decoder = MLLPDecoder()
            for index, (name, piece) in enumerate(pieces):
                if piece.error is not None or piece.kind is not Kind.HL7V2:
                    rows.append({"index": index, "file": name, "ack": None, "error": "not an HL7 v2 message; not sent"})
                else:
                    conn.sendall(frame(piece.data))
                    rows.append({"index": index, "file": name, **_read_ack(conn, decoder)})
                advance()
    except OSError as exc:
        raise click.ClickException(f"{to}: {exc.strerror or exc}") from None
    _print_acks(rows, as_json=as_json)
    if any(r.get("code") not in ("AA", "CA") for r in rows):
        sys.exit(1)


_ROWS_SHOWN = 40  # past this many messages, the table shows only those not accepted


def _expand(sources: tuple[str, ...]) -> list[tuple[str, Path | None]]:
    """Each source as (name shown, path): a folder's files by name, a glob's matches, `-` (None) for stdin."""
    out: list[tuple[str, Path | None]] = []
    for source in sources:
        if source == "-":
            out.append(("-", None))
            continue
        path = Path(source)
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
            out.extend((str(p), p) for p in files)
        elif not path.exists() and any(c in source for c in "*?["):
            matches = sorted(Path(p) for p in glob.glob(source) if Path(p).is_file())
            if not matches:
                raise click.ClickException(f"{source}: no file matches")
            out.extend((str(p), p) for p in matches)
        else:
            out.append((source, path))
    return out


def _read_source(name: str, path: Path | None) -> bytes:
    try:
        return sys.stdin.buffer.read() if path is None else path.read_bytes()
    except OSError as exc:
        raise click.ClickException(f"{name}: cannot read: {exc.strerror}") from None


@contextmanager
def _progress(total: int, *, quiet: bool) -> Iterator[Callable[[], None]]:
    """A progress bar on the terminal (none when output is JSON or not a terminal)."""
    if quiet or total < 2 or not sys.stderr.isatty():
        yield lambda: None
        return
    with Progress(console=DataConsole(stderr=True), transient=True) as bar:
        task = bar.add_task("sending", total=total)
        yield lambda: bar.advance(task)


def _connect(host: str, port: int, timeout_s: float, tls: ssl.SSLContext | None) -> socket.socket:
    conn = socket.create_connection((host, port), timeout=timeout_s)
    if tls is None:
        return conn
    try:
        return tls.wrap_socket(conn, server_hostname=host)
    except BaseException:
        conn.close()
        raise


def _read_ack(conn: socket.socket, decoder: MLLPDecoder) -> dict[str, Any]:
    while True:
        data = conn.recv(65536)
        if not data:
            raise OSError("the peer closed the connection before answering")
        for item in decoder.feed(data):
            if isinstance(item, Frame):
                return _describe_ack(item.payload)


def _describe_ack(payload: bytes) -> dict[str, Any]:
    try:
        ack = parse(payload)
    except InputError as exc:
        return {"code": None, "error": f"unreadable ACK: {exc}"}
    return {
        "code": ack.get("MSA-1"),
        "control_id": ack.get("MSA-2"),
        "text": ack.get("ERR-8") or ack.get("MSA-3") or "",
        "error_location": ack.get("ERR-2") or ack.get("ERR-1") or "",
    }


def _print_acks(rows: list[dict[str, Any]], *, as_json: bool) -> None:
    if as_json:
        for row in rows:
            sys.stdout.write(msgspec.json.encode(row).decode() + "\n")
        return
    shown = rows if len(rows) <= _ROWS_SHOWN else [r for r in rows if r.get("code") not in ("AA", "CA")]
    table = Table(title=f"{len(rows)} message(s) sent" + ("" if shown is rows else ": those not accepted"))
    for name in ("#", "file", "ACK", "control id", "text"):
        table.add_column(name)
    for row in shown:
        code = row.get("code") or "-"
        style = "green" if code in ("AA", "CA") else "red"
        table.add_row(
            str(row["index"]),
            Path(row["file"]).name,  # the name only: a path would wrap the table (the JSON has it whole)
            styled(code, style),
            row.get("control_id") or "",
            row.get("text") or row.get("error") or "",
        )
    console = DataConsole()
    if shown:
        console.print(table)
    counts = collections.Counter(r.get("code") or "not sent" for r in rows)
    console.print(f"{len(rows)} sent: " + ", ".join(f"{code} {n}" for code, n in sorted(counts.items())))
