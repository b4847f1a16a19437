"""Confluent wire format against FakeSchemaRegistry: the registry API on a real HTTP server
on loopback (http.server), hanging on demand; the SDK talks to it with urllib."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_sdk_fakes import FakeClock, fake_meter

from nodemeter.codec import decode_record
from nodemeter.errors import DecodeError, RegistryError, UnknownSchemaError
from nodemeter.events import RequestEnd, UsageEvent
from nodemeter.registry import RegistryClient, RegistryEncoder, decode_confluent
from registry_api import FakeSchemaRegistry, serve


@pytest.fixture
def registry_url() -> Iterator[str]:
    with serve() as url:
        yield url


def test_wire_format_round_trip(registry_url: str, tmp_path: Path) -> None:
    meter, producers = fake_meter(tmp_path, registry_url=registry_url)
    assert meter.registry_ready(timeout=10.0)  # registered in the background
    with meter.request(tenant="acme", request_id="r"), meter.node("n") as s:
        s.record(input_tokens=3)
    meter.flush()
    client = RegistryClient(registry_url)
    values = [m.value() for m in producers[0].delivered]
    assert all(v[:1] == b"\x00" for v in values)
    decoded = [decode_confluent(v, client) for v in values]
    assert isinstance(decoded[0], UsageEvent) and decoded[0].meters.input_tokens == 3
    assert isinstance(decoded[1], RequestEnd) and decoded[1].span_count == 1
    assert int.from_bytes(values[0][1:5], "big") != int.from_bytes(values[1][1:5], "big")
    with pytest.raises(DecodeError):
        decode_record(values[0])  # single-object decoder says it is not its format


def test_registry_errors_are_typed(registry_url: str) -> None:
    client = RegistryClient(registry_url)
    with pytest.raises(UnknownSchemaError):
        client.schema(999)
    dead = RegistryEncoder("http://127.0.0.1:9")
    ev = UsageEvent(
        event_id="e",
        tenant="acme",
        request_id="r",
        node_id="n",
        span_id="s",
        event_time=FakeClock()(),
    )
    with pytest.raises(RegistryError):
        dead.encode(ev)
    with pytest.raises(RegistryError):
        RegistryClient("localhost:8081")


def test_registry_outage_falls_back_to_single_object_encoding(tmp_path: Path) -> None:
    meter, producers = fake_meter(tmp_path, registry_url="http://127.0.0.1:9")
    with meter.request(tenant="acme", request_id="r"), meter.node("n") as s:
        s.record(api_calls=1)
    meter.flush()
    decoded = [decode_record(m.value()) for m in producers[0].delivered]
    assert [type(r).__name__ for r in decoded] == ["UsageEvent", "RequestEnd"]


class HangingSchemaRegistry(FakeSchemaRegistry):
    """The same API on a real loopback HTTP server, answering only once ``release`` is set."""

    release = threading.Event()

    def do_POST(self) -> None:
        self.release.wait(30)
        super().do_POST()

    def do_GET(self) -> None:
        self.release.wait(30)
        super().do_GET()


def test_a_hanging_registry_never_blocks_emit(tmp_path: Path) -> None:
    import time
    from http.server import ThreadingHTTPServer

    HangingSchemaRegistry.release.clear()
    server = ThreadingHTTPServer(("127.0.0.1", 0), HangingSchemaRegistry)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        meter, producers = fake_meter(tmp_path, registry_url=url)
        started = time.monotonic()
        for i in range(5):
            with meter.request(tenant="acme", request_id=f"r{i}"), meter.node("n") as s:
                s.record(input_tokens=1)
        assert time.monotonic() - started < 1.0  # was 5 s per record (the HTTP timeout)
        meter.flush()
        # sent meanwhile in the single-object encoding, which every decoder reads
        early = [decode_record(m.value()) for m in producers[0].delivered]
        assert len(early) == 10
        HangingSchemaRegistry.release.set()  # the registry answers again
        assert meter.registry_ready(timeout=10.0)
        with meter.request(tenant="acme", request_id="late"), meter.node("n") as s:
            s.record(input_tokens=2)
        meter.flush()
        late = [m.value() for m in producers[0].delivered[10:]]
        client = RegistryClient(url)
        assert [type(decode_confluent(v, client)).__name__ for v in late] == [
            "UsageEvent",
            "RequestEnd",
        ]
        meter.close()
    finally:
        HangingSchemaRegistry.release.set()
        server.shutdown()


class WrongPathServer(FakeSchemaRegistry):
    """A web server that is no registry API: 404 with an error object of its own, as
    Apicurio answers at its root (``RESTEASY003210 ... error_code: 404``)."""

    def do_GET(self) -> None:
        self._answer(404, {"message": "Could not find resource", "error_code": 404})

    def do_POST(self) -> None:
        self._answer(404, {"message": "Could not find resource", "error_code": 404})


def test_a_404_without_the_registry_error_code_is_no_unknown_schema() -> None:
    """Only the registry's own 40403 makes an id unknown (its records dead letters); a
    bare 404 is a wrong URL, which the worker retries instead of dead-lettering."""
    with serve(WrongPathServer) as url:
        client = RegistryClient(url)
        with pytest.raises(RegistryError, match="/apis/ccompat/v7") as info:
            client.schema(1)
        assert not isinstance(info.value, UnknownSchemaError)
        with pytest.raises(RegistryError, match="no Confluent-compatible registry API"):
            client.register("dev.nodemeter.v1.UsageEvent", {"type": "string"})


def test_the_registry_404_for_an_unknown_id_is_unknown_schema(registry_url: str) -> None:
    with pytest.raises(UnknownSchemaError, match="schema id 999"):
        RegistryClient(registry_url).schema(999)  # 404 with error_code 40403
