"""What an operator or a clinician asks a running node, over the admin socket: health, status, a record, an ack.

Every request but `health` needs a session with the permission it names, and
every look at PHI is audited before it is answered (`engine.auth.endpoint`).
In a cluster, a record is answered only by its partition's owner.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import final

import anyio
import msgspec

from actors import PatientActors, RecordView, parse_moment
from engine.auth import AuthEndpoint, Permission
from engine.cluster import Cluster, FencedError, partition_of
from engine.core.model import Envelope
from engine.infra.admin_socket import AdminError, Handler
from engine.infra.clock import utc_now
from engine.infra.config import Config
from engine.node.acknowledgements import acknowledgement, was_critical
from engine.node.fanout import Fanout
from engine.wal import DiskFullError, Position, WALFailedError, WriteAheadLog

__all__ = ["NodeRequests", "Report"]

_STATUS_AGE_MAX_S = 60.0  # the oldest count an asker may settle for (`max_age_s`)


@final
class _RecordAsked(msgspec.Struct, frozen=True):
    key: str
    known_at: str | None = None
    as_of: str | None = None


@final
class _RecordAnswer(msgspec.Struct, frozen=True):
    view: RecordView | None = None
    error: str = ""


_ENCODE = msgspec.msgpack.Encoder().encode
_RECORD_ASKED = msgspec.msgpack.Decoder(_RecordAsked)
_RECORD_ANSWER = msgspec.msgpack.Decoder(_RecordAnswer)

# The node's own account of itself (`vigil status`'s sections): filled in by the wiring, which sees every part.
Report = Callable[[], Awaitable[dict[str, object]]]


@final
class NodeRequests:
    """The admin socket's handlers for the node's own requests (sessions have theirs in `AuthEndpoint`)."""

    def __init__(
        self,
        config: Config,
        wal: WriteAheadLog,
        auth: AuthEndpoint,
        fanout: Fanout,
        *,
        cluster: Cluster | None,
        report: Report,
    ) -> None:
        self._config = config
        self._wal = wal
        self._auth = auth
        self._fanout = fanout
        self._cluster = cluster
        self._report = report
        self._status_lock = anyio.Lock()
        self._shared_status: tuple[float, dict[str, object]] = (0.0, {})

    def handlers(self) -> dict[str, Handler]:
        """Each request by name, with the session requests beside them."""
        return {
            "health": self._health,
            "status": self._status,
            "patient": self._patient_request,
            "acknowledge": self._acknowledge,
            **self._auth.handlers(),
        }

    async def patient(self, key: str, *, known_at: str | None = None, as_of: str | None = None) -> RecordView:
        """A patient's record from its actor (now, as known at, as of)."""
        return await self._actors().query(key, known_at=known_at, as_of=as_of)

    async def served_patient(self, key: str, known_at: str | None, as_of: str | None) -> RecordView:
        """A record as its partition's owner has it: this node's, or in a cluster the owner's, asked over NATS.

        A FHIR read may come to any node behind a load balancer; only the
        owner's record is current, so another node asks it (the read was
        allowed and audited where it came in). `AdminError` says why not.
        """
        try:
            self._check_served(key)
        except AdminError:
            return await self._from_owner(key, known_at, as_of)
        return await self.patient(key, known_at=known_at, as_of=as_of)

    async def answer_record_read(self, request: bytes) -> bytes:
        """Another node's read of a record this node serves: the view, or why it cannot be had here."""
        try:
            asked = _RECORD_ASKED.decode(request)
            self._check_served(asked.key)
            view = await self.patient(asked.key, known_at=asked.known_at, as_of=asked.as_of)
        except (AdminError, ValueError, msgspec.DecodeError) as exc:  # ValidationError is a ValueError
            return _ENCODE(_RecordAnswer(error=str(exc)))
        return _ENCODE(_RecordAnswer(view=view))

    async def _from_owner(self, key: str, known_at: str | None, as_of: str | None) -> RecordView:
        cluster = self._cluster
        assert cluster is not None, "only a cluster node serves some partitions"
        partition = partition_of(key, self._config.cluster.partitions)
        owner = cluster.owner(partition)
        if owner is None or owner == cluster.node:
            self._check_served(key)  # says that a takeover is under way, unless it ended meanwhile
            return await self.patient(key, known_at=known_at, as_of=as_of)
        reply = await cluster.read_record(owner, _ENCODE(_RecordAsked(key, known_at, as_of)))
        if reply is None:
            raise AdminError(f"the owner of partition {partition} (node {owner}) did not answer: retry")
        answer = _RECORD_ANSWER.decode(reply)
        if answer.view is None:
            raise AdminError(answer.error or f"node {owner} did not give the record")
        return answer.view

    def _actors(self) -> PatientActors:
        actors = self._fanout.actors
        if actors is None:
            raise AdminError("the patient records are restarting: retry in a moment")
        return actors

    async def _health(self, _request: dict[str, object]) -> dict[str, object]:
        """No session needed: no PHI, only whether the node runs, its LSN and its read side (scripts, `vigil db`)."""
        report = await self._report()
        return {
            "node": self._config.node.id,
            "wal": {"last_lsn": self._wal.last_lsn},
            **{k: report[k] for k in ("sources", "projections", "cluster")},
        }

    async def _status(self, request: dict[str, object]) -> dict[str, object]:
        """What `vigil status` shows, counted after it was asked unless the asker allows an older count.

        Fifty console screens polling status each made the node count its
        parts fifty times a second, on the loop that answers critical results
        (their p99 went 1.9 -> 9.0 ms): a screen asks with `max_age_s` and
        takes the last count if it is that recent. An operator's question
        (`max_age_s` 0, the default) always gets a count begun after it.
        """
        await self._auth.authorize(request, Permission.STATUS_READ)
        max_age_s = _max_age_s(request)
        async with self._status_lock:  # one count at a time; those who waited may take it
            begun, shared = self._shared_status
            if not shared or anyio.current_time() - begun > max_age_s:
                begun = anyio.current_time()  # its age counts from its start: the state may change while counting
                auth = await anyio.to_thread.run_sync(self._auth.service.statistics)
                shared = {
                    "node": self._config.node.id,
                    "wal": msgspec.to_builtins(self._wal.statistics()),
                    "first_lsn": self._wal.first_lsn,
                    **await self._report(),
                    "auth": auth,
                }
                self._shared_status = (begun, shared)
        return shared

    async def _patient_request(self, request: dict[str, object]) -> object:
        key = request.get("key")
        if not isinstance(key, str) or not key:
            raise AdminError("a patient key (authority|identifier) is needed")
        await self._auth.authorize(request, Permission.RECORD_READ, patient=key, action="record")
        self._check_served(key)
        known_at, as_of = _moment(request, "known_at"), _moment(request, "as_of")
        return msgspec.to_builtins(await self.patient(key, known_at=known_at, as_of=as_of))

    async def _acknowledge(self, request: dict[str, object]) -> object:
        """A clinician acknowledges a critical result: recorded in the log, then applied."""
        fields = {k: request.get(k) for k in ("patient", "result_key", "request_id")}
        missing = [k for k, v in fields.items() if not isinstance(v, str) or not v]
        if missing:
            raise AdminError(f"an acknowledgement needs {', '.join(missing)}")
        patient, result_key, request_id = (str(fields[k]) for k in ("patient", "result_key", "request_id"))
        # Who acknowledges is the session's user, never a name the client types.
        access = await self._auth.authorize(
            request, Permission.RESULT_ACKNOWLEDGE, patient=patient, action="acknowledge"
        )
        self._check_served(patient)
        view = await self.patient(patient)
        result = next((r for r in view.results if r.result_key == result_key), None)
        rules = self._config.lanes.rules
        if result is None or not was_critical(result, (*rules.critical_abnormal_flags, *rules.local_critical_flags)):
            raise AdminError("that patient has no critical result with that key")
        now = utc_now()
        note = request.get("note")
        note_text = note if isinstance(note, str) else ""
        env = acknowledgement(patient, result_key, access.user.id, note_text, request_id=request_id, now=now)
        positions = await self._append_command(env)
        await self._fanout.apply([env], positions)
        return {"lsn": positions[0].lsn, "duplicate": positions[0].duplicate, "acknowledged_at": now}

    async def _append_command(self, env: Envelope) -> list[Position]:
        """A command about a patient into the log; in a cluster, in its partition's epoch and into the stream first."""
        cluster = self._cluster
        try:
            if cluster is None:
                return await self._wal.append([env])
            partition = cluster.partition_of(env)
            epoch = cluster.enter(partition)
            if epoch is None:
                raise AdminError(f"this patient's partition ({partition}) is not served here now: retry")
            try:
                positions = await self._wal.append([env], partition=partition, epoch=epoch)
                with anyio.fail_after(self._config.mllp.ack_timeout_s):
                    await cluster.wait_replicated(partition, epoch, positions[0].lsn)
            finally:
                cluster.leave(partition)
        except (DiskFullError, WALFailedError, FencedError, TimeoutError) as exc:
            raise AdminError(f"not recorded, retry: {exc or 'the stream did not acknowledge in time'}") from None
        return positions

    def _check_served(self, patient: str) -> None:
        """In a cluster, a record is answered by its partition's owner only: another node's copy may be behind."""
        cluster = self._cluster
        if cluster is None:
            return
        partition = partition_of(patient, self._config.cluster.partitions)
        if not cluster.serves(partition):
            owner = cluster.owner(partition)
            where = f"node {owner}" if owner else "no node at this moment (a takeover is in progress)"
            raise AdminError(f"this patient's partition ({partition}) is served by {where}: ask there")


def _max_age_s(request: dict[str, object]) -> float:
    """How old a count the asker accepts (`max_age_s`, seconds): 0 unless it says."""
    age = request.get("max_age_s", 0)
    if isinstance(age, bool) or not isinstance(age, int | float) or not 0 <= age <= _STATUS_AGE_MAX_S:
        raise AdminError(f"max_age_s is a number of seconds from 0 to {_STATUS_AGE_MAX_S:g}")
    return float(age)


def _moment(request: dict[str, object], name: str) -> str | None:
    """A time in a request, read strictly (`actors.parse_moment`); refused in one line otherwise."""
    value = request.get(name)
    if value is None:
        return None
    try:
        return parse_moment(str(value))
    except ValueError as exc:
        raise AdminError(f"{name}: {exc}") from None
