"""A route over a real log, delivering to a real downstream (python-hl7's MLLP server in its own process).

Per-patient order, the hold after an AR, retries after AE, a downstream
that goes away and comes back, a restart that resumes from the saved
position, and a critical message that overtakes a billing backlog.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import anyio
import pytest

from engine.core.model import Envelope, Lane
from engine.infra.route_config import RouteConfig
from engine.infra.tls import client_context
from engine.routes import Route
from engine.wal import WriteAheadLog, open_wal
from tests.harness.mllp_receiver import Received, Receiver
from tests.harness.route_helpers import route_envelope, running, until

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    """The node runs on asyncio; routes are its floor, not the runtime floor (which runs on both)."""
    return "asyncio"


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[Receiver]:
    folder = tmp_path / "downstream"
    folder.mkdir()
    downstream = Receiver(folder)
    downstream.start()
    yield downstream
    downstream.kill()


def _config(port: int, **fields: object) -> RouteConfig:
    defaults: dict[str, object] = {"retry_base_s": 0.05, "retry_max_s": 0.2, "ack_timeout_s": 5.0}
    return RouteConfig(name="ehr", destination=f"mllp://127.0.0.1:{port}", **{**defaults, **fields})  # type: ignore[arg-type]


def _route(config: RouteConfig, wal: WriteAheadLog, state: Path) -> Route:
    return Route(config, wal, state, config_dir=state, tls_context=client_context)


async def _append(wal: WriteAheadLog, route: Route, envelopes: Sequence[Envelope]) -> None:
    await wal.append(envelopes)
    route.notify()


async def _received(receiver: Receiver, count: int, timeout_s: float = 30.0) -> list[Received]:
    await until(lambda: len({r.control_id for r in receiver.received()}) >= count, timeout_s)
    return receiver.received()


def _per_patient(received: list[Received]) -> dict[str, list[str]]:
    """Each patient's control ids in the order first received (duplicates dropped)."""
    seen: set[str] = set()
    out: dict[str, list[str]] = {}
    for item in received:
        if item.control_id in seen:
            continue
        seen.add(item.control_id)
        patient = item.raw.split(b"\rPID|1||", 1)[1].split(b"^", 1)[0].decode()
        out.setdefault(patient, []).append(item.control_id)
    return out


async def test_every_message_is_delivered_in_log_order_per_patient(tmp_path: Path, receiver: Receiver) -> None:
    config = _config(receiver.port, connections=4, receiving_application="EHR", receiving_facility="MAIN")
    async with open_wal(tmp_path / "wal") as wal:
        route = _route(config, wal, tmp_path / "route")
        async with running(route):
            for start in range(0, 300, 50):
                await _append(wal, route, [route_envelope(i, f"H|P{i % 7}") for i in range(start, start + 50)])
            received = await _received(receiver, 300)
            await until(lambda: route.statistics().delivered == 300)
            stats = route.statistics()
    assert len({r.control_id for r in received}) == 300
    for ids in _per_patient(received).values():
        assert ids == sorted(ids)
    assert {r.receiver_field for r in received} == {"EHR"}
    assert stats.delivered == 300
    assert stats.settled_through == 300


async def test_a_refused_message_holds_its_patient_while_the_others_flow(tmp_path: Path, receiver: Receiver) -> None:
    receiver.set_mode("AA", refuse=("C000000",))
    async with open_wal(tmp_path / "wal") as wal:
        route = _route(_config(receiver.port, connections=2), wal, tmp_path / "route")
        async with running(route):
            await _append(wal, route, [route_envelope(i, f"H|P{i % 3}") for i in range(30)])
            received = await _received(receiver, 20)  # P1 and P2: 10 each; P0 is held at its first
            await anyio.sleep(0.3)
            assert {r.control_id for r in receiver.received()} == {f"C{i:06d}" for i in range(30) if i % 3}
            [refusal] = route.refusals()
            assert (refusal.lsn, refusal.code, refusal.patient) == (1, "AR", "H|P0")
            assert "AR" in refusal.answer or refusal.answer == ""
            assert route.statistics().held_patients == 1
            route.skip(1)
            received = await _received(receiver, 29)
    p0 = _per_patient(received)["P0"]
    assert p0 == [f"C{i:06d}" for i in range(3, 30, 3)]


async def test_an_operator_retry_sends_the_refused_message_first(tmp_path: Path, receiver: Receiver) -> None:
    receiver.set_mode("AA", refuse=("C000000",))
    async with open_wal(tmp_path / "wal") as wal:
        route = _route(_config(receiver.port), wal, tmp_path / "route")
        async with running(route):
            await _append(wal, route, [route_envelope(i, "H|P0") for i in range(5)])
            await until(lambda: bool(route.refusals()), 10)
            await anyio.sleep(0.2)  # time for the held messages to be sent, were the hold not kept
            assert receiver.received() == []
            receiver.set_mode("AA")
            await route.retry(1)
            received = await _received(receiver, 5)
            assert route.refusals() == []
    assert _per_patient(received)["P0"] == [f"C{i:06d}" for i in range(5)]


async def test_an_application_error_is_retried_until_accepted(tmp_path: Path, receiver: Receiver) -> None:
    receiver.set_mode("AE")
    async with open_wal(tmp_path / "wal") as wal:
        route = _route(_config(receiver.port), wal, tmp_path / "route")
        async with running(route):
            await _append(wal, route, [route_envelope(i, "H|P0") for i in range(3)])
            await until(lambda: route.statistics().retries >= 3, 10)
            receiver.set_mode("AA")
            received = await _received(receiver, 3)
    assert [r.control_id for r in received] == ["C000000", "C000001", "C000002"]


async def test_an_ack_that_never_comes_is_sent_again_on_a_new_connection(tmp_path: Path, receiver: Receiver) -> None:
    receiver.set_mode("stall")
    async with open_wal(tmp_path / "wal") as wal:
        route = _route(_config(receiver.port, ack_timeout_s=0.5), wal, tmp_path / "route")
        async with running(route):
            await _append(wal, route, [route_envelope(0, "H|P0")])
            await until(lambda: route.statistics().retries >= 1, 10)  # the first attempt timed out
            receiver.set_mode("AA")
            received = await _received(receiver, 1)
            stats = route.statistics()
    assert [r.control_id for r in received] == ["C000000"]
    assert stats.resent >= 1  # counted: the stalled receiver might have stored it


async def test_a_downstream_outage_loses_nothing_and_keeps_order(tmp_path: Path, receiver: Receiver) -> None:
    async with open_wal(tmp_path / "wal") as wal:
        route = _route(_config(receiver.port, connections=3), wal, tmp_path / "route")
        async with running(route):
            await _append(wal, route, [route_envelope(i, f"H|P{i % 5}") for i in range(100)])
            await _received(receiver, 100)
            receiver.kill()
            await _append(wal, route, [route_envelope(i, f"H|P{i % 5}") for i in range(100, 200)])
            await until(lambda: route.statistics().state.startswith("unreachable"), 10)
            assert route.statistics().state.startswith("unreachable"), route.statistics().state
            receiver.start()
            received = await _received(receiver, 200)
    assert len({r.control_id for r in received}) == 200
    for ids in _per_patient(received).values():
        assert ids == sorted(ids)


async def test_a_restarted_route_resumes_where_it_stopped(tmp_path: Path, receiver: Receiver) -> None:
    async with open_wal(tmp_path / "wal") as wal:
        route = _route(_config(receiver.port), wal, tmp_path / "route")
        async with running(route):
            await _append(wal, route, [route_envelope(i, "H|P0") for i in range(50)])
            await _received(receiver, 50)
        await wal.append([route_envelope(i, "H|P0") for i in range(50, 80)])  # while the route is down
        again = _route(_config(receiver.port), wal, tmp_path / "route")
        async with running(again):
            received = await _received(receiver, 80)
    assert [r.control_id for r in received] == [f"C{i:06d}" for i in range(80)]  # none twice: saved on the way out


async def test_a_new_route_starts_at_the_end_of_the_log(tmp_path: Path, receiver: Receiver) -> None:
    async with open_wal(tmp_path / "wal") as wal:
        await wal.append([route_envelope(i, "H|P0") for i in range(10)])
        route = _route(_config(receiver.port), wal, tmp_path / "route")
        async with running(route):
            await _append(wal, route, [route_envelope(10, "H|P0")])
            received = await _received(receiver, 1)
    assert [r.control_id for r in received] == ["C000010"]


@pytest.mark.parametrize("order", ["lanes", "fifo"])
async def test_a_critical_message_overtakes_a_billing_backlog(tmp_path: Path, receiver: Receiver, order: str) -> None:
    async with open_wal(tmp_path / "wal") as wal:
        route = _route(_config(receiver.port, order=order), wal, tmp_path / "route")
        async with running(route):
            route.pause()
            billing = [route_envelope(i, f"H|B{i % 40}", Lane.BATCH, "DFT^P03") for i in range(400)]
            await _append(wal, route, billing)
            await _append(wal, route, [route_envelope(400, "H|STAT", Lane.CRITICAL)])
            await until(lambda: route.statistics().read_through >= 401, 10)
            route.resume()
            received = await _received(receiver, 401)
    position = [r.control_id for r in received].index("C000400")
    assert position == (0 if order == "lanes" else 400)


async def test_a_folder_route_writes_one_file_per_message(tmp_path: Path) -> None:
    config = RouteConfig(name="archive", destination="folder:out", message_types=("ADT^*",))
    async with open_wal(tmp_path / "wal") as wal:
        route = _route(config, wal, tmp_path)
        async with running(route):
            await _append(wal, route, [route_envelope(0, "H|P0", mtype="ADT^A01"), route_envelope(1, "H|P0")])
            await until(lambda: route.statistics().settled_through >= 2, 10)
    files = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert files == ["000000000001-ADT_A01.hl7"]
    assert (tmp_path / "out" / files[0]).read_bytes() == route_envelope(0, "H|P0", mtype="ADT^A01").raw


async def test_a_replay_delivers_history_again_for_one_patient(tmp_path: Path, receiver: Receiver) -> None:
    async with open_wal(tmp_path / "wal") as wal:
        route = _route(_config(receiver.port), wal, tmp_path / "route")
        async with running(route):
            await _append(wal, route, [route_envelope(i, f"H|P{i % 2}") for i in range(10)])
            await _received(receiver, 10)
            with pytest.raises(LookupError, match="nothing to replay"):
                route.replay(11)
            route.replay(3, patient="H|P0")
            await until(lambda: len(receiver.received()) >= 14 and route.statistics().replays == 0)
            stats = route.statistics()
    again = [r.control_id for r in receiver.received()[10:]]
    assert again == ["C000002", "C000004", "C000006", "C000008"]  # LSN 3 on, P0's only, in log order
    assert stats.resent == 0  # asked for: not counted as possible duplicates


async def test_a_replay_survives_a_restart(tmp_path: Path, receiver: Receiver) -> None:
    async with open_wal(tmp_path / "wal") as wal:
        route = _route(_config(receiver.port), wal, tmp_path / "route")
        async with running(route):
            await _append(wal, route, [route_envelope(i, "H|P0") for i in range(5)])
            await _received(receiver, 5)
            route.pause()
            route.replay(1)
        again = _route(_config(receiver.port), wal, tmp_path / "route")
        async with running(again):
            assert again.statistics().replays == 1
            again.resume()
            await until(lambda: len(receiver.received()) >= 10 and again.statistics().replays == 0)
    assert [r.control_id for r in receiver.received()[5:]] == [f"C{i:06d}" for i in range(5)]
