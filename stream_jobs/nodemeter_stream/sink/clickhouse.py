"""Batched, idempotent ClickHouse writes with back-pressure; reusable by every agent.

Use it like this (the ingest and pricing agents do)::

    async for events in stream.noack_take(policy.max_size, within=policy.max_wait_s):
        blocks = [Block(table=..., columns=..., rows=..., token=offsets_token(...))]
        await sink.write(blocks)          # returns only once ClickHouse acknowledged
        await ack_all(stream, events)     # now the offsets may be committed

* Each :class:`Block` is one insert tagged with ``insert_deduplication_token``; the
  tables set ``non_replicated_deduplication_window``, so re-sending a block after a
  crash or a lost acknowledgement is a no-op.
* ``write`` retries with exponential backoff for as long as ClickHouse is down. The
  agent awaits it, its ``noack_take`` buffer fills and Faust stops fetching: the
  outage pauses consumption and nothing is acknowledged, so nothing is lost.
* clickhouse-connect is blocking (and chDB wants one thread): every call runs on one
  dedicated thread, so the event loop keeps heart-beating to the broker.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from nodemeter.errors import NodemeterError
from nodemeter_stream.sink.store import ClickHouseConfig

log = logging.getLogger("nodemeter.sink")


class SinkStopped(NodemeterError):
    """The sink was stopped while a write was still waiting for ClickHouse."""


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
    ) -> None:
        self.config = config or ClickHouseConfig()
        self._factory = client_factory or self._connect
        self._retry_initial_s = retry_initial_s
        self._retry_max_s = retry_max_s
        self._migrate = migrate_on_start
        self.metrics = metrics
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="clickhouse")
        self._client: Any = None
        self._stopping = False
        self._stop_event = asyncio.Event()
        self.blocks_written = 0

    def _connect(self) -> Any:
        from nodemeter_stream.sink.migrate import migrate
        from nodemeter_stream.sink.store import connect

        client = connect(self.config)
        if self._migrate:
            migrate(client, verbose=False)
        return client

    async def _call(self, fn: Callable[[], Any]) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn)

    def _client_or_connect(self) -> Any:
        if self._client is None:
            self._client = self._factory()
        return self._client

    async def start(self) -> None:
        """Connect (and migrate) now, retrying until ClickHouse answers."""
        await self._retrying("connect", lambda: self._client_or_connect())

    async def _retrying(self, what: str, fn: Callable[[], Any]) -> Any:
        delay = self._retry_initial_s
        attempt = 0
        while True:
            attempt += 1
            try:
                return await self._call(fn)
            except Exception as exc:
                if self._stopping:
                    raise
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
        client.insert(
            block.table,
            [list(r) for r in block.rows],
            column_names=list(block.columns),
            settings={"insert_deduplication_token": block.token},
        )

    async def write(self, blocks: Iterable[Block]) -> None:
        """Insert every non-empty block; returns once ClickHouse acknowledged all."""
        for block in blocks:
            if not block.rows:
                continue
            t0 = time.perf_counter()
            await self._retrying(
                f"insert into {block.table}", functools.partial(self._insert_now, block)
            )
            self.blocks_written += 1
            if self.metrics is not None:
                self.metrics.sink_latency.observe(time.perf_counter() - t0)

    async def query(self, sql: str, parameters: dict[str, Any] | None = None) -> list[Any]:
        """A read on the sink's thread (the same chDB session)."""

        def run() -> list[Any]:
            return list(self._client_or_connect().query(sql, parameters=parameters).result_rows)

        result: list[Any] = await self._retrying("query", run)
        return result

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


async def ack_all(stream: Any, events: Iterable[Any]) -> None:
    """Ack events only after their effects are stored: then Faust may commit them."""
    for event in events:
        await stream.ack(event)
