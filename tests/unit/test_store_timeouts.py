"""The ClickHouse client's timeouts come from the URL's query (docs/worker.md): against
a server that accepts and never answers (a real listening socket on loopback, the real
clickhouse-connect HTTP client), the connect fails after the read timeout given there,
not clickhouse-connect's default of 300 s."""

from __future__ import annotations

import socket
import time

import pytest

from nodemeter_stream.sink.store import ClickHouseConfig, connect


def test_send_receive_timeout_in_the_url_bounds_a_stalled_server() -> None:
    with socket.socket() as hole:
        hole.bind(("127.0.0.1", 0))
        hole.listen(16)  # the kernel completes the handshake; nobody ever answers
        port = hole.getsockname()[1]
        url = f"http://127.0.0.1:{port}/?send_receive_timeout=1&connect_timeout=1"
        t0 = time.monotonic()
        with pytest.raises(Exception, match=r"(?i)read timed out"):
            connect(ClickHouseConfig(url=url))
        took = time.monotonic() - t0
    assert took < 60, f"{took:.1f} s: the URL's timeout was not applied (default 300 s)"
