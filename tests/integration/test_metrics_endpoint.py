"""The worker's /metrics endpoint listens on loopback unless told otherwise."""

from __future__ import annotations

import socket
import urllib.request

from nodemeter.cli import build_parser
from nodemeter_stream.metrics import WorkerMetrics


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_metrics_listen_on_loopback_by_default() -> None:
    port = free_port()
    server = WorkerMetrics().serve(port)
    try:
        assert server.server_address[0] == "127.0.0.1"
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()
        assert b"nodemeter_events_in" in body
    finally:
        server.shutdown()
        server.server_close()


def test_metrics_host_chooses_the_address() -> None:
    port = free_port()
    server = WorkerMetrics().serve(port, "0.0.0.0")
    try:
        assert server.server_address[0] == "0.0.0.0"
    finally:
        server.shutdown()
        server.server_close()
    assert WorkerMetrics().serve(0) is None  # port 0: no endpoint


def test_the_worker_command_has_metrics_host_defaulting_to_loopback() -> None:
    parser = build_parser()
    assert parser.parse_args(["worker"]).metrics_host == "127.0.0.1"
    assert parser.parse_args(["worker", "--metrics-host", "::"]).metrics_host == "::"
