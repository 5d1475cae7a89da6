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
"""

from __future__ import annotations

import functools
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import final

import anyio
import msgspec

from actors import RecordView
from engine.core.feedgen import FeedMix, generate_feed
from engine.core.hl7 import Message, parse
from engine.core.mllp import Frame, MLLPDecoder, frame
from engine.core.model import Lane
from engine.infra.config import Config, ProjectionsConfig
from engine.node import Node
from engine.wal import LogRecord
from lanes import Classifier, LaneStatistics

__all__ = ["STORY_MESSAGES", "STORY_PATIENT", "DemoReport", "LaneReport", "run_demo"]

STORY_PATIENT = "GENHOSP|MRN900001"
# A hospital's interfaces: a few busy billing feeds, clinical feeds, a lab feed.
STORY_MESSAGES = 6
_CONNECTIONS = {Lane.BATCH: 6, Lane.STANDARD: 3, Lane.CRITICAL: 1}
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
    feed = generate_feed(count, seed, _DEMO_MIX)
    story = _story()
    for n, message in enumerate(story):
        feed.insert(min(len(feed), (n + 1) * len(feed) // (len(story) + 1)), message)
    return feed


async def run_demo(
    config: Config,
    count: int,
    seed: int,
    *,
    keep: Path | None = None,
    progress: Callable[[int], None] | None = None,
) -> DemoReport:
    """Run an embedded node, feed it over MLLP, and report."""
    feed = _feed(count, seed)
    classifier = Classifier(config.lanes.rules)
    queues: dict[Lane, list[bytes]] = {lane: [] for lane in Lane}
    for raw in feed:
        queues[classifier.classify_hl7(raw).lane].append(raw)
    latencies: dict[Lane, list[float]] = {lane: [] for lane in Lane}
    accepted = dict.fromkeys(Lane, 0)
    with tempfile.TemporaryDirectory(prefix="vigil-demo-") as scratch:
        data_dir = keep if keep is not None else Path(scratch)
        # The embedded default: no external service, even where $VIGIL_PG_DSN is set for real nodes.
        embedded = msgspec.structs.replace(config, projections=ProjectionsConfig(dsn_env="", dsn=""))
        node = Node(embedded, data_dir)
        async with anyio.create_task_group() as tg:
            port = await tg.start(functools.partial(node.run, mllp=("127.0.0.1", 0)))
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
                            lane=lane,
                            progress=progress,
                        )
                        senders.start_soon(send)
            elapsed = time.perf_counter() - started
            record = await node.patient(STORY_PATIENT)
            timeline = list(node.wal.read_patient(STORY_PATIENT))
            node_lanes = node.lane_statistics()
            node.stop()
    lanes = [
        LaneReport(lane.value, len(queues[lane]), accepted[lane], _pct(latencies[lane], 50), _pct(latencies[lane], 99))
        for lane in Lane
    ]
    return DemoReport(
        len(feed), elapsed, lanes, node_lanes, STORY_PATIENT, timeline, record, str(keep) if keep else None
    )


async def _send_all(
    port: int,
    messages: list[bytes],
    *,
    latencies: list[float],
    accepted: dict[Lane, int],
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
