"""The one way Vigil connects to NATS: the source, the cluster and the CLI all come through here.

- `connect_serving`: a long-lived part's connection (a source, the cluster):
  retried on the one back-off table while the broker is away, then
  reconnecting on its own; its state ("unreachable", "connected",
  "disconnected") is reported through `on_state`, and nats-py's error
  callback, which fires on every reconnect attempt, is said once an
  interval (`RepeatedWarning`).
- `connect_once`: an operator's question (`vigil cluster ...`): one try per
  server under one deadline, never a reconnect loop; a broker that does not
  answer is a `NatsUnavailableError` naming the servers.

`DRIVER_ERRORS` names what nats-py raises when the broker or the network
fails, so the parts catch it by that name rather than by the driver's types.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import anyio
import nats
import nats.errors
from nats.aio.client import Client

from engine.core.errors import VigilError
from engine.infra.repeated_warning import RepeatedWarning

__all__ = ["CONNECT_RETRY_S", "DRIVER_ERRORS", "NatsUnavailableError", "connect_once", "connect_serving"]

# What the driver raises when the broker or the network fails (never a message's fault).
DRIVER_ERRORS: tuple[type[Exception], ...] = (nats.errors.Error, OSError)
# Waits between attempts while the broker is away: soon at first (a restart), then every few seconds.
CONNECT_RETRY_S = (0.2, 0.5, 1.0, 2.0, 5.0)


class NatsUnavailableError(VigilError):
    """No NATS server answered in time."""


async def connect_serving(
    servers: Sequence[str],
    *,
    name: str,
    security: dict[str, object],
    log: Any,
    events: str,
    on_state: Callable[[str], None],
    reconnect_time_wait_s: float = 2.0,
) -> Client:
    """Connect, retrying until a server answers; the client then reconnects on its own, reporting its state.

    `log` and `events` are the part's: its lines read `{events}.connect_failed`,
    `{events}.disconnected`, `{events}.reconnected` and `{events}.nats_error`.
    """
    errors = RepeatedWarning(log, f"{events}.nats_error")  # nats-py calls back on every reconnect attempt

    async def on_error(exc: Exception) -> None:
        errors.warn(error=type(exc).__name__)

    async def on_disconnected() -> None:
        on_state("disconnected")
        log.warning(f"{events}.disconnected")

    async def on_reconnected() -> None:
        on_state("connected")
        log.info(f"{events}.reconnected")

    attempt = 0
    while True:
        try:
            client = await nats.connect(
                servers=list(servers),
                name=name,
                connect_timeout=2,
                max_reconnect_attempts=-1,
                reconnect_time_wait=reconnect_time_wait_s,
                error_cb=on_error,
                disconnected_cb=on_disconnected,
                reconnected_cb=on_reconnected,
                **security,  # nats-py options: credentials and TLS (engine.infra.tls.nats_security)
            )
        except DRIVER_ERRORS as exc:
            on_state("unreachable")
            delay = CONNECT_RETRY_S[min(attempt, len(CONNECT_RETRY_S) - 1)]
            log.warning(f"{events}.connect_failed", error=type(exc).__name__, retry_in_s=delay)
            attempt += 1
            await anyio.sleep(delay)
            continue
        on_state("connected")
        return client


async def connect_once(servers: Sequence[str], *, security: dict[str, object], deadline_s: float) -> Client:
    """One try per server, all within `deadline_s`; `NatsUnavailableError` naming the servers otherwise."""
    unreachable = f"cannot reach NATS at {', '.join(servers)}"
    try:
        # nats-py retries an unreachable server ~60 times, 2 s apart, even without reconnecting:
        # one attempt per server, and a deadline over all of them.
        with anyio.fail_after(deadline_s):
            return await nats.connect(
                servers=list(servers),
                connect_timeout=2,
                allow_reconnect=False,
                max_reconnect_attempts=1,
                error_cb=_quiet,
                **security,
            )
    except TimeoutError:
        raise NatsUnavailableError(f"{unreachable}: no answer within {deadline_s:.0f} s") from None
    except DRIVER_ERRORS as exc:
        raise NatsUnavailableError(f"{unreachable}: {type(exc).__name__}") from None


async def _quiet(_exc: Exception) -> None:
    """An operator's one-shot connection says what failed once, in its own error; not each attempt."""
