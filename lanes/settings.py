"""Lane scheduling settings, as configured in `config.toml` under `[lanes.scheduler]`."""

from __future__ import annotations

from typing import Annotated, Literal, final

import msgspec

__all__ = ["LaneLimits", "SchedulerSettings"]


@final
class LaneLimits(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One lane's bounds: how many items may wait, how many may run at once."""

    capacity_items: Annotated[int, msgspec.Meta(ge=1, le=10_000_000)]
    workers: Annotated[int, msgspec.Meta(ge=1, le=10_000)]


@final
class SchedulerSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """How the lanes share the node.

    A worker holds its slot while its message is made durable, so the budgets
    are large: many appends in flight are what let the log group-commit them.

    Attributes:
        critical, standard, batch: each lane's queue capacity and worker budget.
        workers_total: items running at once across all lanes; the critical
            lane's workers are reserved within it (standard and batch share
            the rest), so a critical item never waits for a slot.
        standard_weight, batch_weight: when both have work, standard gets
            this many starts for every `batch_weight` batch starts (batch never
            starves).
        mode: "priority" (the lanes), or "fifo": one queue in arrival order,
            what ordinary integration engines do; kept only as the benchmark's
            baseline.
    """

    critical: LaneLimits = LaneLimits(1024, 32)
    standard: LaneLimits = LaneLimits(4096, 128)
    batch: LaneLimits = LaneLimits(16384, 16)
    workers_total: Annotated[int, msgspec.Meta(ge=1, le=10_000)] = 176
    standard_weight: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 4
    batch_weight: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 1
    mode: Literal["priority", "fifo"] = "priority"
