"""The ClickHouse sink's retry/back-pressure contract, with a fake client (no engine)."""

from __future__ import annotations

import asyncio
import threading
import time
from types import SimpleNamespace
from typing import Any

import pytest

from nodemeter_stream.metrics import WorkerMetrics
from nodemeter_stream.sink.clickhouse import Block, ClickHouseSink, SinkStopped, columns_of


class FakeTypes:
    """A fake of clickhouse-connect's column-type lookup (``create_insert_context``): it
    counts the lookups and names each column's type after the column."""

    def __init__(self) -> None:
        self.lookups: list[str] = []

    def create_insert_context(self, table: str, column_names: list[str]) -> Any:
        self.lookups.append(table)
        return SimpleNamespace(column_types=[f"{table}.{c}" for c in column_names])


def as_rows(data: list[Any], *, column_oriented: bool) -> list[list[Any]]:
    return [list(r) for r in zip(*data, strict=True)] if column_oriented else data


class FakeClient(FakeTypes):
    """Fails the first ``down_for`` inserts like an unreachable server, then records them."""

    def __init__(self, down_for: int) -> None:
        super().__init__()
        self.down_for = down_for
        self.calls = 0
        self.inserted: list[tuple[str, list[Any], str]] = []
        self.types: list[Any] = []

    def insert(
        self,
        table: str,
        data: list[Any],
        *,
        column_names: list[str],
        column_types: list[Any],
        column_oriented: bool,
        settings: dict[str, str],
    ) -> None:
        self.calls += 1
        if self.calls <= self.down_for:
            raise ConnectionError("Connection refused")
        assert len(column_types) == len(column_names)
        self.types.append(column_types)
        rows = as_rows(data, column_oriented=column_oriented)
        self.inserted.append((table, rows, settings["insert_deduplication_token"]))

    def close(self) -> None:
        pass


def test_write_retries_until_acknowledged_and_tags_each_block() -> None:
    client = FakeClient(down_for=3)
    metrics = WorkerMetrics()
    sink = ClickHouseSink(
        client_factory=lambda: client, retry_initial_s=0.01, retry_max_s=0.02, metrics=metrics
    )
    blocks = [
        Block(table="usage_events", columns=["a"], rows=[[1], [2]], token="usage_events:u:0:0-1"),
        Block(table="dead_letters", columns=["a"], rows=[], token="dead_letters:u:0:0-1"),
    ]

    async def go() -> None:
        await sink.write(blocks)
        await sink.close()

    asyncio.run(go())
    assert client.inserted == [
        ("usage_events", [[1], [2]], "usage_events:u:0:0-1")
    ]  # empty block skipped
    assert client.calls == 4
    assert metrics.sink_retries._value.get() == 3


def test_write_blocks_while_clickhouse_is_down() -> None:
    client = FakeClient(down_for=10**9)
    sink = ClickHouseSink(client_factory=lambda: client, retry_initial_s=0.01, retry_max_s=0.01)

    async def go() -> bool:
        task = asyncio.ensure_future(
            sink.write([Block(table="t", columns=["a"], rows=[[1]], token="x")])
        )
        await asyncio.sleep(0.3)
        pending = not task.done()  # back-pressure: the caller is still waiting, nothing acked
        client.down_for = 0  # the outage ends
        await asyncio.wait_for(task, 5)
        await sink.close()
        return pending

    assert asyncio.run(go())
    assert client.inserted and client.inserted[0][0] == "t"
    assert client.calls > 5


class FailsOnceStopped(FakeTypes):
    """A fake client whose call is in flight when ``stop()`` comes, then fails (the
    connection refused), as a write does against a server that is down."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = threading.Event()
        self.release = threading.Event()

    def insert(self, table: str, rows: list[Any], **_: Any) -> None:
        self.entered.set()
        self.release.wait(5)
        raise ConnectionError("Connection refused")

    def query(self, sql: str, parameters: Any = None) -> Any:
        self.insert("q", [])

    def close(self) -> None:
        pass


@pytest.mark.parametrize("call", ["write", "query", "connect"])
def test_a_call_that_fails_after_stop_raises_sink_stopped_not_its_own_error(call: str) -> None:
    """The shutdown contract: once ``stop()`` is called, a write, read or connection in
    flight ends in ``SinkStopped`` (the agents leave the batch unacknowledged and exit
    cleanly), never in the client's error (which crashed the worker: exit 1 on SIGTERM)."""
    client = FailsOnceStopped()

    def factory() -> FailsOnceStopped:
        if call == "connect":  # the connection itself is in flight, then refused
            client.insert("connect", [])
        return client

    sink = ClickHouseSink(client_factory=factory, retry_initial_s=0.01)

    async def go() -> None:
        task: asyncio.Future[Any]
        if call == "write":
            task = asyncio.ensure_future(
                sink.write([Block(table="t", columns=["a"], rows=[[1]], token="x")])
            )
        elif call == "query":
            task = asyncio.ensure_future(sink.query("SELECT 1"))
        else:
            task = asyncio.ensure_future(sink.start())
        while not client.entered.is_set():
            await asyncio.sleep(0.01)
        sink.stop()  # SIGTERM arrives while the call is in flight
        client.release.set()
        with pytest.raises(SinkStopped):
            await asyncio.wait_for(task, 5)
        await sink.close()

    asyncio.run(go())


def test_a_stalled_call_is_logged_and_shown_in_a_gauge(caplog: pytest.LogCaptureFixture) -> None:
    """A server that accepts and never answers: no error comes for minutes (the client's
    read timeout), so the sink says so itself, and the gauge rises while it waits."""
    release = threading.Event()

    class Stalls(FakeTypes):
        def insert(self, table: str, rows: list[Any], **_: Any) -> None:
            release.wait(30)

        def close(self) -> None:
            pass

    metrics = WorkerMetrics()
    sink = ClickHouseSink(client_factory=Stalls, stall_warn_s=0.1, metrics=metrics)

    def gauge() -> float:
        return metrics.registry.get_sample_value("nodemeter_sink_call_seconds") or 0.0

    def warned() -> int:
        return sum("unanswered" in r.getMessage() for r in caplog.records)

    async def go() -> tuple[float, int, float]:
        task = asyncio.ensure_future(
            sink.write([Block(table="t", columns=["a"], rows=[[1]], token="x")])
        )
        deadline = time.monotonic() + 20  # a bound for a loaded machine, not a speed
        while (gauge() < 0.25 or warned() < 2) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        during, warnings = gauge(), warned()
        release.set()
        await asyncio.wait_for(task, 30)
        after = gauge()
        await sink.close()
        return during, warnings, after

    with caplog.at_level("WARNING", logger="nodemeter.sink"):
        during, warnings, after = asyncio.run(go())
    assert warnings >= 2  # every stall_warn_s while it waits
    assert during >= 0.25
    assert after == 0.0
    assert sink.blocks_written == 1  # the stalled call was waited for, not abandoned


def test_column_types_are_read_once_per_table_and_columns() -> None:
    client = FakeClient(down_for=0)
    sink = ClickHouseSink(client_factory=lambda: client)

    async def go() -> None:
        for i in range(3):
            await sink.write([
                Block(table="t", columns=["a", "b"], rows=[[i, "x"], [i, "y"]], token=f"t{i}"),
                Block(table="u", columns=["a"], rows=[[i]], token=f"u{i}"),
            ])  # fmt: skip
        await sink.write([Block(table="t", columns=["b"], rows=[["z"]], token="t/b")])
        await sink.close()

    asyncio.run(go())
    assert client.lookups == ["t", "u", "t"]  # the third: other columns of t
    assert client.types[0] == client.types[2] == ["t.a", "t.b"]
    assert client.types[-1] == ["t.b"]
    assert [rows for table, rows, _ in client.inserted if table == "t"][:3] == [
        [[i, "x"], [i, "y"]] for i in range(3)
    ]


class RefusesStaleTypes(FakeTypes):
    """A fake whose table changes a column's type after the first lookup (a migration
    by a newer worker): an insert with the old types is refused as a value that does
    not fit (``DataError``), one with the new types is stored."""

    def __init__(self) -> None:
        super().__init__()
        self.version = 1
        self.inserted: list[list[Any]] = []

    def create_insert_context(self, table: str, column_names: list[str]) -> Any:
        self.lookups.append(table)
        return SimpleNamespace(column_types=[f"v{self.version}"] * len(column_names))

    def insert(self, table: str, data: list[Any], *, column_types: list[Any], **kw: Any) -> None:
        if column_types[0] != f"v{self.version}":
            raise type("DataError", (Exception,), {})("value does not fit its column")
        self.inserted.extend(as_rows(data, column_oriented=kw["column_oriented"]))


def test_types_a_migration_changed_are_read_again_and_nothing_is_rejected() -> None:
    client = RefusesStaleTypes()
    metrics = WorkerMetrics()
    sink = ClickHouseSink(client_factory=lambda: client, metrics=metrics)

    async def go() -> None:
        await sink.write([Block(table="t", columns=["a"], rows=[[1]], token="1")])
        client.version = 2
        await sink.write([Block(table="t", columns=["a"], rows=[[2], [3]], token="2")])
        await sink.close()

    asyncio.run(go())
    assert client.inserted == [[1], [2], [3]]
    assert client.lookups == ["t", "t"]
    assert metrics.registry.get_sample_value(
        "nodemeter_sink_rejected_rows_total", {"table": "t"}
    ) in (None, 0.0)


def test_columns_of_transposes_and_refuses_ragged_rows() -> None:
    assert columns_of([[1, "a"], [2, "b"]]) == [(1, 2), ("a", "b")]
    with pytest.raises(ValueError):
        columns_of([[1, "a"], [2]])
