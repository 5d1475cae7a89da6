"""Parsing a large input (stdin, a dropped file, a NATS batch) in worker processes, beside the event loop.

Classifying, parsing and mapping HL7 v2 is the largest share of a node's
CPU on a stream: about a third of its main thread (benchmarks/bench_node.py).
A worker process does that share for a large input while the event loop
appends, answers and applies what is already parsed. Small inputs and single
MLLP messages stay in the loop: the hand-off (about 100 µs here) would cost
more than their parse. A single *large* message (`ingest.large_message_bytes`)
goes to a worker too (`parse_one`): an 8.9 MB ORU of 150,000 OBX took 0.3 s
to classify and 1.9 s to parse and map, all of it in front of every critical
message waiting on the loop. A worker gives the memory such a message took
back to the system when it is done (`engine.infra.memory`).

A chunk of messages goes out as raw bytes and comes back as one msgpack
document (envelopes cross the process boundary in their wire form, decoded
in a few µs each), with the refusals beside it. A worker that dies or cannot
start is not an outage: the node logs it and parses in the loop, as for a
small input. The workers are a `ProcessPoolExecutor` started with `spawn`:
the node has threads, and a forked child could inherit a held lock.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import multiprocessing
import os
import threading
import time
from collections.abc import Sequence
from typing import final

import msgspec
import structlog

from engine.core.decode import Decoder
from engine.core.errors import InputError
from engine.core.hl7 import CharsetDefaults
from engine.core.model import Envelope
from engine.core.windows import patient_hint
from engine.infra.memory import release_free_memory
from lanes import Classification, ClassificationRules, Classifier

__all__ = ["ParsePool", "Parsed"]

_log = structlog.get_logger("vigil.parse_pool")


@final
class Parsed(msgspec.Struct, frozen=True, array_like=True):
    """One HL7 v2 message parsed in a worker: its lane (None: not classifiable), patient hint, envelope.

    `envelope` is None when the message was refused: the refusal is in the
    chunk's error map, or (no lane) the node classifies it again to explain it.
    """

    classified: Classification | None
    hint: bytes | None
    envelope: Envelope | None


_ENCODER = msgspec.msgpack.Encoder()
_DECODER = msgspec.msgpack.Decoder(list[Parsed])
_decoder: Decoder | None = None  # one per worker process, made by `_start_worker`
_WATCHDOG_INTERVAL_S = 0.5  # how soon a worker notices that the node is gone
_TRIM_AFTER_BYTES = 4 * 1024 * 1024  # a chunk this large leaves the worker's free memory to the system


def _start_worker(rules: ClassificationRules, charsets: CharsetDefaults, node_pid: int, nice: int) -> None:
    global _decoder  # noqa: PLW0603 -- the worker process's one decoder, made once
    os.nice(nice)  # below the node: the CPU goes to the loop that answers critical traffic first
    _decoder = Decoder(Classifier(rules), charsets)
    threading.Thread(target=_exit_with, args=(node_pid,), name="parse-worker-watchdog", daemon=True).start()


def _exit_with(node_pid: int) -> None:
    """Leave when the node is gone (SIGKILL included): a worker holds its own end of the
    pool's queue, so it would otherwise wait on it forever, an orphan."""
    while os.getppid() == node_pid:
        time.sleep(_WATCHDOG_INTERVAL_S)
    os._exit(0)


def _parse_chunk(
    messages: Sequence[tuple[bytes, bool]], received_at: str, source: str
) -> tuple[bytes, dict[int, InputError]]:
    """In a worker: each (raw, in_batch) classified, parsed and mapped; refusals by index."""
    assert _decoder is not None, "the worker was not started by ParsePool"
    parsed: list[Parsed] = []
    refused: dict[int, InputError] = {}
    large = sum(len(raw) for raw, _ in messages) >= _TRIM_AFTER_BYTES
    for index, (raw, in_batch) in enumerate(messages):
        hint = patient_hint(raw)
        try:
            classified = _decoder.classifier.classify_hl7(raw, in_batch=in_batch)
        except InputError:
            parsed.append(Parsed(None, hint, None))  # explained by the node, one by one, as ever
            continue
        try:
            envelope = _decoder.hl7(
                raw, received_at=received_at, source=source, in_batch=in_batch, classified=classified
            )
        except InputError as exc:
            refused[index] = exc
            parsed.append(Parsed(classified, hint, None))
            continue
        parsed.append(Parsed(classified, hint, envelope))
    encoded = _ENCODER.encode(parsed)
    if large:  # what the parse took goes back to the system, not kept by the allocator for later
        del parsed
        release_free_memory()
    return encoded, refused


@final
class ParsePool:
    """Worker processes for large inputs; `parse` returns None when they cannot serve (parse in the loop)."""

    def __init__(
        self, rules: ClassificationRules, workers: int, charsets: CharsetDefaults | None = None, *, nice: int = 10
    ) -> None:
        self._rules = rules
        self._nice = nice
        self._charsets = charsets if charsets is not None else CharsetDefaults()
        self._workers = workers
        self._executor: concurrent.futures.ProcessPoolExecutor | None = None
        self._broken = False

    def start(self) -> None:
        """Start the workers now (they take a moment to import), so the first large input need not wait."""
        if self._executor is not None or self._broken or self._workers < 1:
            return
        try:
            self._executor = concurrent.futures.ProcessPoolExecutor(
                self._workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_start_worker,
                initargs=(self._rules, self._charsets, os.getpid(), self._nice),
            )
            self._executor.submit(int)  # makes the processes start now, not at the first chunk
        except (OSError, concurrent.futures.BrokenExecutor) as exc:  # no /dev/shm, no processes left...
            self._give_up(exc)
            return
        _log.info("parse_pool.started", workers=self._workers)

    def submit(
        self, messages: Sequence[tuple[bytes, bool]], received_at: str, source: str
    ) -> asyncio.Future[tuple[bytes, dict[int, InputError]]] | None:
        """One chunk on its way to a worker; None when the pool cannot serve."""
        self.start()
        if self._executor is None:
            return None
        try:
            future = self._executor.submit(_parse_chunk, list(messages), received_at, source)
        except (concurrent.futures.BrokenExecutor, RuntimeError) as exc:
            self._give_up(exc)
            return None
        return asyncio.wrap_future(future)

    async def parse_one(
        self, raw: bytes, *, in_batch: bool, received_at: str, source: str
    ) -> tuple[Classification | None, Envelope | InputError | None] | None:
        """One (large) message classified, parsed and mapped in a worker; None when the pool cannot serve.

        The lane is None when the message could not be classified (the loop
        explains it, as for a chunk); then the envelope is None too.
        """
        future = self.submit([(raw, in_batch)], received_at, source)
        answer = await self.result(future) if future is not None else None
        if answer is None:
            return None
        [parsed], refused = answer
        return parsed.classified, refused.get(0, parsed.envelope)

    async def result(
        self, future: asyncio.Future[tuple[bytes, dict[int, InputError]]]
    ) -> tuple[list[Parsed], dict[int, InputError]] | None:
        """A chunk's answer; None when its worker failed (the chunk is parsed in the loop instead)."""
        try:
            encoded, refused = await future
            return _DECODER.decode(encoded), refused
        except Exception as exc:  # noqa: BLE001 -- a broken worker, whatever broke it: the loop parses instead
            self._give_up(exc)
            return None

    def _give_up(self, exc: BaseException) -> None:
        if not self._broken:
            _log.error("parse_pool.failed", error=type(exc).__name__, then="parsing in the event loop")
        self._broken = True
        self._stop(cancel=False)  # chunks awaited still answer (or fail, and are parsed in the loop)

    def close(self) -> None:
        """Stop the workers: the node is done with them."""
        self._stop(cancel=True)

    def _stop(self, *, cancel: bool) -> None:
        executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=False, cancel_futures=cancel)
