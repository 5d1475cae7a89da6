"""The demo: Vigil's main job on the embedded default, end to end.

An embedded node starts in a temporary data directory (or `--keep DIR`); a
generated hospital feed goes to it over MLLP, on several connections at once
as a hospital's interfaces would send it: admissions, routine and STAT
results, medication orders, and a billing flood far larger than the rest.
Woven into the feed is one patient's story: an emergency admission, a STAT
potassium, a critical result of 6.9, its correction to 4.2, a medication
order, a discharge. The demo measures each message from send to ACK (which
means durable) per lane, and ends with that patient's record as the node's
patient actor holds it.

The node delivers what it accepts onward, over a route, to a stand-in EHR
(`demo_downstream`) that takes half a millisecond per message, over four
MLLP connections: slower than the feed while it lasts, so a backlog of
billing forms on the route, and the demo shows each lane's wait from ACK to
arrival at the EHR and what the story's critical potassium overtook.
"""

from __future__ import annotations

import functools
import secrets
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import final

import anyio
import msgspec

from actors import RecordView
from engine.auth import AuthStore, Role, User, hash_secret
from engine.cli.demo_downstream import Downstream
from engine.core.feedgen import FeedMix, generate_feed
from engine.core.hl7 import Message, parse, read_header
from engine.core.mllp import Frame, MLLPDecoder, frame
from engine.core.model import Lane
from engine.infra.config import Config, ProjectionsConfig
from engine.infra.route_config import RouteConfig
from engine.node import Node
from engine.wal import LogRecord
from lanes import Classifier, LaneStatistics

__all__ = ["STORY_MESSAGES", "STORY_PATIENT", "DeliveryReport", "DemoReport", "LaneReport", "StoryDelivery", "run_demo"]

STORY_PATIENT = "GENHOSP|MRN900001"
# A hospital's interfaces: a few busy billing feeds, clinical feeds, a lab feed.
STORY_MESSAGES = 6
_CONNECTIONS = {Lane.BATCH: 6, Lane.STANDARD: 3, Lane.CRITICAL: 1}
_DOWNSTREAM_DELAY_S = 0.0005  # the stand-in EHR's work per message
_DRAIN_MAX_S = 10.0  # after the feed, how long the demo waits for the route to deliver the rest
_DEMO_MIX = FeedMix(
    admissions=6, routine_results=18, stat_results=2, corrections=0.5, orders=8, pharmacy=5, billing=180
)


@final
class LaneReport(msgspec.Struct, frozen=True):
    """What one lane carried, and how long its messages waited for their ACK (durable)."""

    lane: str
    messages: int
    accepted: int
    ack_p50_ms: float
    ack_p99_ms: float


@final
class DeliveryReport(msgspec.Struct, frozen=True):
    """One lane's deliveries to the EHR: how many, and the wait from ACK (durable) to arrival downstream."""

    lane: str
    delivered: int
    p50_ms: float
    p99_ms: float


@final
class StoryDelivery(msgspec.Struct, frozen=True):
    """One story message at the EHR: its wait after its ACK, and the billing accepted before it that it overtook."""

    control_id: str
    message_type: str
    lane: str
    delivered_after_ms: float | None
    billing_overtaken: int


@final
class DemoReport(msgspec.Struct, frozen=True):
    """The demo's figures, the node's own lane statistics, and the story patient."""

    messages: int
    elapsed_s: float
    lanes: list[LaneReport]
    node_lanes: list[LaneStatistics]
    patient: str
    timeline: list[LogRecord]
    record: RecordView
    data_dir: str | None
    delivery: list[DeliveryReport] = []
    story_delivery: list[StoryDelivery] = []
    still_to_deliver: int = 0

    @property
    def messages_per_s(self) -> float:
        return self.messages / self.elapsed_s if self.elapsed_s else 0.0


def _story(base: str = "20261124") -> list[bytes]:
    pid = "PID|1||MRN900001^^^GENHOSP^MR||Okonkwo^Adaeze||19580704|F|||12 Quay St^^Port Vigil^^9012"
    msh = "MSH|^~\\&|{app}|GENHOSP|VIGIL|GENHOSP|{ts}||{mtype}|{ctl}|P|2.5.1"

    def message(app: str, ts: str, mtype: str, ctl: str, *segments: str) -> bytes:
        lines = [msh.format(app=app, ts=base + ts, mtype=mtype, ctl=ctl), pid, *segments]
        return ("\r".join(lines) + "\r").encode()

    obr = "OBR|1|S900|S900F|2823-3^Potassium^LN|S||{ts}" + "|" * 18 + "{status}"
    return [
        message(
            "ADT",
            "071000",
            "ADT^A01^ADT_A01",
            "STORY1",
            f"EVN|A01|{base}071000",
            "PV1|1|E|ED^4^1^GENHOSP|E" + "|" * 15 + "V900001",
        ),
        message(
            "CPOE",
            "071200",
            "ORM^O01^ORM_O01",
            "STORY2",
            f"ORC|NW|S900|||||||{base}071200",
            "OBR|1|S900||2823-3^Potassium^LN",
            "TQ1|1||||||||S",
        ),
        message(
            "LAB",
            "073000",
            "ORU^R01^ORU_R01",
            "STORY3",
            "ORC|RE|S900|S900F",
            obr.format(ts=f"{base}072000", status="F"),
            f"OBX|1|NM|2823-3^Potassium^LN||6.9|mmol/L|3.5-5.1|HH|||F|||{base}072000",
        ),
        message(
            "LAB",
            "075500",
            "ORU^R01^ORU_R01",
            "STORY4",
            "ORC|RE|S900|S900F",
            obr.format(ts=f"{base}072000", status="C"),
            f"OBX|1|NM|2823-3^Potassium^LN||4.2|mmol/L|3.5-5.1|N|||C|||{base}072000",
        ),
        message(
            "PHARM",
            "080000",
            "RDE^O11^RDE_O11",
            "STORY5",
            f"ORC|NW|RX900|||||||{base}080000",
            "RXE|^^^20261124^^R|0409-1966^Calcium gluconate 1 g^NDC|1||g",
        ),
        message(
            "ADT",
            "180000",
            "ADT^A03^ADT_A03",
            "STORY6",
            f"EVN|A03|{base}180000",
            "PV1|1|I|MED1^2^1^GENHOSP|E" + "|" * 15 + "V900001" + "|" * 26 + f"{base}180000",
        ),
    ]


def _feed(count: int, seed: int) -> list[bytes]:
    feed = [_earlier_stay(raw) for raw in generate_feed(count, seed, _DEMO_MIX)]
    story = _story()
    for n, message in enumerate(story):
        feed.insert(min(len(feed), (n + 1) * len(feed) // (len(story) + 1)), message)
    return feed


def _earlier_stay(raw: bytes) -> bytes:
    """Billing runs days behind care: its messages are for patients of earlier stays, not today's wards.

    (A route keeps each patient's messages in log order, so a billing backlog
    for today's patients would stand, rightly, in front of their results.)
    """
    head = raw[: raw.find(b"\r")]
    if b"|DFT^" in head or b"|BAR^" in head:
        return raw.replace(b"\rPID|1||MRN", b"\rPID|1||ACC", 1)
    return raw


async def run_demo(
    config: Config,
    count: int,
    seed: int,
    *,
    keep: Path | None = None,
    progress: Callable[[int], None] | None = None,
    console: Callable[[str], None] | None = None,
    hold: Callable[[DemoReport], Awaitable[None]] | None = None,
) -> DemoReport:
    """Run an embedded node, feed it over MLLP, and report.

    `console` is told, once the node serves, where its web console is and the
    demo account to sign in with (a clinician and operator, made for this
    data directory with a random password). `hold`, given the report, keeps the
    node (and its console) up until it returns.
    """
    feed = _feed(count, seed)
    classifier = Classifier(config.lanes.rules)
    queues: dict[Lane, list[bytes]] = {lane: [] for lane in Lane}
    for raw in feed:
        queues[classifier.classify_hl7(raw).lane].append(raw)
    latencies: dict[Lane, list[float]] = {lane: [] for lane in Lane}
    accepted = dict.fromkeys(Lane, 0)
    acked: dict[str, float] = {}
    downstream = Downstream(_DOWNSTREAM_DELAY_S)
    with tempfile.TemporaryDirectory(prefix="vigil-demo-") as scratch:
        data_dir = keep if keep is not None else Path(scratch)
        async with anyio.create_task_group() as tg:
            ehr = await tg.start(downstream.run)
            account = await anyio.to_thread.run_sync(_demo_account, data_dir)
            node = Node(_embedded(config, ehr), data_dir)
            port = await tg.start(functools.partial(node.run, mllp=("127.0.0.1", 0)))
            if console is not None:
                console(f"http://127.0.0.1:{node.http_port}/console (user {account[0]}, password {account[1]})")
            started = time.perf_counter()
            async with anyio.create_task_group() as senders:
                for lane, connections in _CONNECTIONS.items():
                    for k in range(connections):
                        share = queues[lane][k::connections]
                        send = functools.partial(
                            _send_all,
                            port,
                            share,
                            latencies=latencies[lane],
                            accepted=accepted,
                            acked=acked,
                            lane=lane,
                            progress=progress,
                        )
                        senders.start_soon(send)
            elapsed = time.perf_counter() - started
            with anyio.move_on_after(_DRAIN_MAX_S):
                while len(downstream.arrived) < len(acked):  # noqa: ASYNC110 -- another task's counter, polled
                    await anyio.sleep(0.05)
            record = await node.patient(STORY_PATIENT)
            timeline = list(node.wal.read_patient(STORY_PATIENT))
            lanes = [
                LaneReport(
                    lane.value, len(queues[lane]), accepted[lane], _pct(latencies[lane], 50), _pct(latencies[lane], 99)
                )
                for lane in Lane
            ]
            report = DemoReport(
                len(feed),
                elapsed,
                lanes,
                node.lane_statistics(),
                STORY_PATIENT,
                timeline,
                record,
                str(keep) if keep else None,
                delivery=_deliveries(queues, acked, downstream.arrived),
                story_delivery=_story_deliveries(queues[Lane.BATCH], acked, downstream.arrived, classifier),
                still_to_deliver=len(acked.keys() - downstream.arrived.keys()),
            )
            if hold is not None:
                await hold(report)
            node.stop()
            tg.cancel_scope.cancel()
    return report


def _demo_account(data_dir: Path) -> tuple[str, str]:
    """A clinician and operator for the demo's console, with a random password (and PIN) for this run."""
    password, pin = secrets.token_urlsafe(12), f"{secrets.randbelow(10**6):06d}"
    store = AuthStore.open_private(data_dir)
    try:
        store.put_user(User("demo", "Demo", (Role.CLINICIAN, Role.OPERATOR), hash_secret(password), hash_secret(pin)))
    finally:
        store.close()
    return "demo", password


def _embedded(config: Config, ehr_port: int) -> Config:
    """The embedded default (no external service, even where $VIGIL_PG_DSN is set), a route to the EHR, the console."""
    ehr = RouteConfig(name="ehr", destination=f"mllp://127.0.0.1:{ehr_port}", connections=4)
    http = msgspec.structs.replace(config.http, listen="127.0.0.1:0", tls_cert_file="", tls_key_file="")
    return msgspec.structs.replace(config, projections=ProjectionsConfig(dsn_env="", dsn=""), routes=(ehr,), http=http)


def _control_id(raw: bytes) -> str:
    return read_header(raw).get(10).decode("latin-1")


def _deliveries(
    queues: dict[Lane, list[bytes]], acked: dict[str, float], arrived: dict[str, float]
) -> list[DeliveryReport]:
    out = []
    for lane in Lane:
        waits = [(arrived[c] - acked[c]) * 1000 for c in map(_control_id, queues[lane]) if c in arrived and c in acked]
        out.append(DeliveryReport(lane.value, len(waits), _pct(waits, 50), _pct(waits, 99)))
    return out


def _story_deliveries(
    billing: list[bytes], acked: dict[str, float], arrived: dict[str, float], classifier: Classifier
) -> list[StoryDelivery]:
    """Each story message: when it reached the EHR, and how many billing messages ACK'd before it it overtook."""
    billing_ids = [c for c in map(_control_id, billing) if c in acked]
    out = []
    for raw in _story():
        header = read_header(raw)
        ctl = header.get(10).decode("latin-1")
        mtype = f"{header.get(9).decode()}^{header.get(9, 2).decode()}"
        lane = classifier.classify_hl7(raw).lane.value
        if ctl not in acked or ctl not in arrived:
            out.append(StoryDelivery(ctl, mtype, lane, None, 0))
            continue
        overtaken = sum(1 for c in billing_ids if acked[c] < acked[ctl] and arrived.get(c, float("inf")) > arrived[ctl])
        out.append(StoryDelivery(ctl, mtype, lane, round((arrived[ctl] - acked[ctl]) * 1000, 2), overtaken))
    return out


async def _send_all(
    port: int,
    messages: list[bytes],
    *,
    latencies: list[float],
    accepted: dict[Lane, int],
    acked: dict[str, float],
    lane: Lane,
    progress: Callable[[int], None] | None,
) -> None:
    """One MLLP connection: send, wait for the ACK, next."""
    decoder = MLLPDecoder()
    async with await anyio.connect_tcp("127.0.0.1", port) as stream:
        for raw in messages:
            t0 = time.perf_counter()
            await stream.send(frame(raw))
            ack = await _read_ack(stream, decoder)
            latencies.append((time.perf_counter() - t0) * 1000)
            if ack.get("MSA-1") in ("AA", "CA"):
                accepted[lane] += 1
                acked[str(ack.get("MSA-2"))] = time.time()  # the downstream's clock is the wall clock too
            if progress is not None:
                progress(1)


async def _read_ack(stream: anyio.abc.ByteStream, decoder: MLLPDecoder) -> Message:
    while True:
        for item in decoder.feed(await stream.receive(65536)):
            if isinstance(item, Frame):
                return parse(item.payload)


def _pct(values: list[float], q: int) -> float:
    if not values:
        return 0.0
    if len(values) == 1:
        return round(values[0], 2)
    return round(statistics.quantiles(values, n=100, method="inclusive")[q - 1], 2)
