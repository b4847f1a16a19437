"""Batched, idempotent ClickHouse writes with back-pressure; reusable by every agent.

Use it like this (the ingest and pricing agents do)::

    async for events in batches(stream, policy.max_size, policy.max_wait_s):
        blocks = [Block(table=..., columns=..., rows=..., token=offsets_token(...))]
        await sink.write(blocks)          # returns only once ClickHouse acknowledged
        ack_events(events)                # now the offsets may be committed

* Each :class:`Block` is one insert tagged with ``insert_deduplication_token``; the
  tables set ``non_replicated_deduplication_window``, so re-sending a block after a
  crash or a lost acknowledgement is a no-op.
* ``write`` retries with exponential backoff for as long as ClickHouse is down. The
  agent awaits it, its channel's queue fills and Faust stops fetching: the
  outage pauses consumption and nothing is acknowledged, so nothing is lost.
* An error no retry can fix (:func:`permanent`: a value that does not fit its column,
  a parse error; not a schema error) is not retried: the block is split in
  halves until the rows ClickHouse refuses are alone; those go to ``dead_letters``
  (reason ``store_rejected``, the error and the row as JSON), counted in
  ``nodemeter_sink_rejected_rows{table}`` and logged; every other row is stored and the
  stream goes on. The halves' tokens derive from the block's, so a replay splits the
  same way and stores nothing twice.
* clickhouse-connect is blocking (and chDB wants one thread): every call runs on one
  dedicated thread (:class:`~nodemeter_stream.sink.thread.CallThread`, a daemon), so
  the event loop keeps heart-beating to the broker, and a call that never returns
  does not keep a stopped worker from exiting.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import json
import logging
import re
import struct
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from nodemeter.errors import NodemeterError
from nodemeter_stream.sink.store import ClickHouseConfig
from nodemeter_stream.sink.thread import CallThread

log = logging.getLogger("nodemeter.sink")


class SinkStopped(NodemeterError):
    """The sink was stopped while a write was still waiting for ClickHouse."""


class Refused(NodemeterError):
    """ClickHouse refused an insert for a reason no retry can fix (see :func:`permanent`)."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(repr(cause))
        self.cause = cause


# ClickHouse error codes that say a value is wrong for its column, not the server:
# CANNOT_PARSE_TEXT, CANNOT_PARSE_QUOTED_STRING, CANNOT_PARSE_INPUT_ASSERTION_FAILED,
# CANNOT_PARSE_DATE, CANNOT_PARSE_DATETIME, ILLEGAL_TYPE_OF_ARGUMENT, TYPE_MISMATCH,
# ARGUMENT_OUT_OF_BOUND, CANNOT_CONVERT_TYPE, CANNOT_PARSE_NUMBER, INCORRECT_DATA,
# VALUE_IS_OUT_OF_RANGE_OF_DATA_TYPE, NO_COMMON_TYPE, DECIMAL_OVERFLOW. A schema error
# (unknown table or column) is not among them: it is a deployment fault that every row
# would hit, so it stalls, loudly, rather than dead-letter the whole stream.
PERMANENT_CODES = frozenset({6, 26, 27, 38, 41, 43, 53, 69, 70, 72, 117, 321, 386, 407})
# Every insert's settings. A batch of valid events can span more than the 100 months
# (partitions) ClickHouse accepts in one block by default, say a backfill of old usage;
# the insert then fails with TOO_MANY_PARTS (252) on every retry and the stream stalls
# behind it. Valid event times (2000-2200) bound a block to 2,400 months, so no limit is
# needed; each month's part keeps the block's deduplication token (with its index), so
# a replay still stores nothing twice (tests/integration/test_sink_refused.py).
INSERT_SETTINGS: dict[str, Any] = {"max_partitions_per_insert_block": 0}
_CODE = re.compile(r"Code: (\d+)\.")
REJECTED = "store_rejected"
_DEAD_LETTER_COLUMNS = (
    "source_topic", "source_partition", "source_offset", "reason", "detail", "tenant",
    "record_key", "payload",
)  # fmt: skip


def permanent(exc: BaseException) -> bool:
    """An insert error that retrying cannot fix: a value does not fit its column.

    clickhouse-connect raises ``DataError`` when a value cannot be serialised for its
    column (an integer past UInt64, a None in a non-Nullable column); the server (or
    chDB) answers with an error code (:data:`PERMANENT_CODES`). Everything else is
    transient and retried (back-pressure): connection errors, server overload, and
    schema errors (``ProgrammingError`` for an unknown column, UNKNOWN_TABLE)."""
    if _is_connection_lost(exc):
        return False
    if type(exc).__name__ == "DataError" or isinstance(exc, OverflowError | struct.error):
        return True
    m = _CODE.search(str(exc))
    return m is not None and int(m.group(1)) in PERMANENT_CODES


def columns_of(rows: Sequence[Sequence[Any]]) -> list[tuple[Any, ...]]:
    """The rows as columns (pure); every row must have the same length."""
    return list(zip(*rows, strict=True))


def rejected_row(block: Block, row: Sequence[Any], exc: BaseException) -> list[Any]:
    """The dead_letters row for one row ClickHouse refused (pure)."""
    cols = dict(zip(block.columns, row, strict=False))
    payload = json.dumps(cols, default=str, ensure_ascii=False).encode()
    return [
        str(cols.get("source_topic", f"table:{block.table}")),
        int(cols.get("source_partition", 0) or 0),
        int(cols.get("source_offset", 0) or 0),
        REJECTED,
        f"{block.table}: {exc!r}"[:2000],
        str(cols.get("tenant", "")),
        b"",
        payload,
    ]


@dataclass(frozen=True, slots=True, kw_only=True)
class Block:
    table: str
    columns: Sequence[str]
    rows: Sequence[Sequence[Any]]
    token: str


class ClickHouseSink:
    def __init__(
        self,
        config: ClickHouseConfig | None = None,
        *,
        client_factory: Callable[[], Any] | None = None,
        retry_initial_s: float = 0.1,
        retry_max_s: float = 5.0,
        migrate_on_start: bool = True,
        metrics: Any = None,
        stall_warn_s: float = 30.0,
    ) -> None:
        self.config = config or ClickHouseConfig()
        self._stall_warn_s = stall_warn_s
        self._factory = client_factory or self._connect
        self._retry_initial_s = retry_initial_s
        self._retry_max_s = retry_max_s
        self._migrate = migrate_on_start
        self.metrics = metrics
        self._executor = CallThread("clickhouse")
        self._client: Any = None
        # (table, columns) -> the column types clickhouse-connect read for them
        self._column_types: dict[tuple[str, tuple[str, ...]], Any] = {}
        self._stopping = False
        self._stop_event = asyncio.Event()
        self.blocks_written = 0
        if metrics is not None:
            metrics.sink_call_seconds.set_function(lambda: self.call_in_flight_s() or 0.0)

    def _connect(self) -> Any:
        from nodemeter_stream.sink.migrate import migrate
        from nodemeter_stream.sink.store import connect

        client = connect(self.config)
        if self._migrate:
            migrate(client, verbose=False)
        return client

    async def _call(self, fn: Callable[[], Any]) -> Any:
        future = asyncio.get_running_loop().run_in_executor(self._executor, fn)
        while True:
            # not cancelled on timeout: a stalled call is waited for, and said
            try:
                done, _ = await asyncio.wait({future}, timeout=self._stall_warn_s)
            except asyncio.CancelledError:
                future.cancel()  # as awaiting it would: a call not yet started never runs
                raise
            if done:
                return future.result()
            log.warning(
                "a clickhouse call has gone unanswered for %.0f s (a stalled server or"
                " network); the batch waits for it and consumption is paused behind it",
                self._executor.in_flight_s() or 0.0,
            )

    def _client_or_connect(self) -> Any:
        if self._client is None:
            self._client = self._factory()
        return self._client

    async def start(self) -> None:
        """Connect (and migrate) now, retrying until ClickHouse answers."""
        await self._retrying("connect", lambda: self._client_or_connect())

    async def _retrying(
        self,
        what: str,
        fn: Callable[[], Any],
        *,
        give_up: Callable[[Exception], bool] | None = None,
    ) -> Any:
        delay = self._retry_initial_s
        attempt = 0
        while True:
            attempt += 1
            try:
                return await self._call(fn)
            except Exception as exc:
                if self._stopping:
                    # stop() came while the call was in flight: the caller sees the
                    # shutdown, never the client's own error (which would crash the
                    # worker and make a SIGTERM exit 1)
                    raise SinkStopped(f"stopped during {what}") from exc
                if give_up is not None and give_up(exc):
                    raise Refused(exc) from exc
                if self.metrics is not None:
                    self.metrics.sink_retries.inc()
                log.warning(
                    "clickhouse %s failed (attempt %d), retrying in %.1fs: %r",
                    what,
                    attempt,
                    delay,
                    exc,
                )
                if _is_connection_lost(exc):
                    self._client = None
                # Sleep, but wake at once on stop: a shutdown must not wait out an outage.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop_event.wait(), delay)
                if self._stopping:
                    raise SinkStopped(f"stopped while retrying {what}") from exc
                delay = min(delay * 2, self._retry_max_s)

    def _insert_now(self, block: Block) -> None:
        client = self._client_or_connect()
        key = (block.table, tuple(block.columns))
        cached = self._column_types.get(key)
        try:
            self._insert_with(client, block, key, cached)
        except Exception as exc:
            if cached is None or not permanent(exc):
                raise
            # A value that does not fit may be a column whose type a migration changed
            # since the types were read: read them again, and try once more with them.
            self._column_types.pop(key, None)
            self._insert_with(client, block, key, None)

    def _insert_with(
        self, client: Any, block: Block, key: tuple[str, tuple[str, ...]], types: Any
    ) -> None:
        """One insert, column-oriented, with the table's column types read once per
        table (clickhouse-connect would otherwise ask the server for them on every
        insert, and copy and pivot the rows in Python, holding the GIL)."""
        names = list(block.columns)
        if types is None:
            types = client.create_insert_context(block.table, names).column_types
            self._column_types[key] = types
        client.insert(
            block.table,
            columns_of(block.rows),
            column_names=names,
            column_types=types,
            column_oriented=True,
            settings={**INSERT_SETTINGS, "insert_deduplication_token": block.token},
        )

    async def write(self, blocks: Iterable[Block]) -> None:
        """Insert every non-empty block; returns once ClickHouse acknowledged all (rows
        it refused for good are in ``dead_letters`` by then)."""
        for block in blocks:
            if not block.rows:
                continue
            t0 = time.perf_counter()
            await self._store(block)
            self.blocks_written += 1
            if self.metrics is not None:
                self.metrics.sink_latency.observe(time.perf_counter() - t0)

    async def _store(self, block: Block) -> None:
        try:
            await self._retrying(
                f"insert into {block.table}",
                functools.partial(self._insert_now, block),
                give_up=permanent,
            )
        except Refused as refused:
            if len(block.rows) > 1:
                mid = len(block.rows) // 2
                for i, rows in enumerate((block.rows[:mid], block.rows[mid:])):
                    await self._store(
                        dataclasses.replace(block, rows=rows, token=f"{block.token}/{i}")
                    )
                return
            await self._reject(block, refused.cause)

    async def _reject(self, block: Block, exc: BaseException) -> None:
        log.error("clickhouse refused a row of %s for good; dead-lettered as %s: %r",
                  block.table, REJECTED, exc)  # fmt: skip
        if self.metrics is not None:
            self.metrics.sink_rejected_rows.labels(table=block.table).inc()
        if block.table == "dead_letters":
            return  # not even as a dead letter: the log and the metric are all there is
        dead = Block(
            table="dead_letters",
            columns=_DEAD_LETTER_COLUMNS,
            rows=[rejected_row(block, block.rows[0], exc)],
            token=f"{block.token}/rejected",
        )
        await self._store(dead)

    async def query(self, sql: str, parameters: dict[str, Any] | None = None) -> list[Any]:
        """A read on the sink's thread (the same chDB session)."""

        def run() -> list[Any]:
            return list(self._client_or_connect().query(sql, parameters=parameters).result_rows)

        result: list[Any] = await self._retrying("query", run)
        return result

    def call_in_flight_s(self) -> float | None:
        """For how long the ClickHouse call now running has run; None when idle."""
        return self._executor.in_flight_s()

    @property
    def stopping(self) -> bool:
        """``stop()`` was called: writes give up instead of retrying."""
        return self._stopping

    def stop(self) -> None:
        """Give up retrying (shutdown): pending writes raise SinkStopped, nothing is acked."""
        self._stopping = True
        self._stop_event.set()

    async def close(self) -> None:
        self.stop()
        client, self._client = self._client, None
        if client is not None:
            try:
                await self._call(client.close)
            except Exception as exc:  # closing is best effort
                log.debug("closing clickhouse client: %r", exc)
        self._executor.shutdown(wait=True)


def _is_connection_lost(exc: BaseException) -> bool:
    name = type(exc).__name__
    return "Operational" in name or "Connection" in name or isinstance(exc, OSError)
