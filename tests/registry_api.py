"""The Confluent Schema Registry API subset nodemeter uses, on a real HTTP server on
loopback (http.server): register a subject version, get a schema by id. A fake of the
registry's state, shared by the SDK's and the worker's registry tests."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, HTTPServer


class FakeSchemaRegistry(BaseHTTPRequestHandler):
    schemas: dict[int, str] = {}
    subjects: dict[str, int] = {}

    def _answer(self, code: int, body: object) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/vnd.schemaregistry.v1+json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        subject = self.path.split("/")[2]
        key = subject + body["schema"]
        if key not in self.subjects:
            self.subjects[key] = len(self.schemas) + 1
            self.schemas[self.subjects[key]] = body["schema"]
        self._answer(200, {"id": self.subjects[key]})

    def do_GET(self) -> None:
        sid = int(self.path.rsplit("/", 1)[1])
        if sid not in self.schemas:
            self._answer(404, {"error_code": 40403, "message": "Schema not found"})
        else:
            self._answer(200, {"schema": self.schemas[sid]})

    def log_message(self, *args: object) -> None:
        pass


@contextmanager
def serve(handler: type[BaseHTTPRequestHandler] = FakeSchemaRegistry) -> Iterator[str]:
    """The registry's base URL while a server with ``handler`` runs."""
    server = HTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
