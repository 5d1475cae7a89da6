"""The demo's work: run a generated hospital feed through the pipeline and measure it.

Until the node exists this is the pure pipeline (classify, parse, map) over a
generated feed; the CLI renders what `run_demo` returns.
"""

from __future__ import annotations

import statistics
import time
from typing import final

import msgspec

from engine.decode import Decoder
from engine.errors import InputError
from engine.feedgen import generate_feed
from engine.model import Envelope, Lane

__all__ = ["TIMELINE_MAX", "DemoReport", "LaneReport", "run_demo"]

TIMELINE_MAX = 15  # rows of the patient timeline shown


@final
class LaneReport(msgspec.Struct, frozen=True):
    """What one lane received, and how long decoding its messages took."""

    lane: str
    messages: int
    decode_p50_us: float
    decode_p99_us: float


@final
class DemoReport(msgspec.Struct, frozen=True):
    """The demo's figures and one patient's timeline."""

    messages: int
    rejected: int
    elapsed_s: float
    lanes: list[LaneReport]
    patient: str | None
    timeline: list[Envelope]  # the patient's clinical messages (billing left out)

    @property
    def messages_per_s(self) -> float:
        return self.messages / self.elapsed_s if self.elapsed_s else 0.0


def _percentile(values: list[float], q: int) -> float:
    if not values:
        return 0.0
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def run_demo(count: int, seed: int, decoder: Decoder | None = None) -> DemoReport:
    """Generate `count` messages and decode them, timing each."""
    decoder = decoder if decoder is not None else Decoder()
    feed = generate_feed(count, seed)
    timings: dict[Lane, list[float]] = {lane: [] for lane in Lane}
    envelopes: list[Envelope] = []
    rejected = 0
    started = time.perf_counter()
    for i, raw in enumerate(feed):
        t0 = time.perf_counter_ns()
        try:
            env = decoder.hl7(raw, received_at=f"demo+{i}", source="demo")
        except InputError:
            rejected += 1
            continue
        timings[env.lane].append((time.perf_counter_ns() - t0) / 1000)
        envelopes.append(env)
    elapsed = time.perf_counter() - started
    lanes = [
        LaneReport(lane.value, len(t), round(_percentile(t, 50), 1), round(_percentile(t, 99), 1))
        for lane, t in timings.items()
    ]
    # Follow the patient with a critical result and the most clinical traffic.
    critical = {e.patient for e in envelopes if e.lane is Lane.CRITICAL and e.patient}
    clinical: dict[str, int] = {}
    for e in envelopes:
        if e.patient in critical and e.lane is not Lane.BATCH:
            clinical[e.patient] = clinical.get(e.patient, 0) + 1
    patient = max(sorted(clinical), key=clinical.__getitem__) if clinical else None
    timeline = [e for e in envelopes if e.patient == patient and e.lane is not Lane.BATCH][:TIMELINE_MAX]
    return DemoReport(len(feed), rejected, elapsed, lanes, patient, timeline)
