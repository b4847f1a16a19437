"""Confluent Schema Registry wire format, used when a registry URL is configured.

Bytes: ``00`` + 4-byte big-endian schema id + Avro body. Subjects follow the
RecordNameStrategy (``dev.nodemeter.v1.UsageEvent``), because one topic carries
two record types (usage events and request ends). Standard library HTTP only,
so the base install stays light; ids are cached after the first call.
"""

from __future__ import annotations

import base64
import io
import json
import threading
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

import fastavro

from nodemeter.avrocheck import compile_check
from nodemeter.codec import (
    request_end_from_avro,
    request_end_to_avro,
    schema_entry,
    usage_event_from_avro,
    usage_event_to_avro,
)
from nodemeter.errors import DecodeError, RegistryError, UnknownSchemaError
from nodemeter.events import Record, UsageEvent
from nodemeter.redact import redact_url

CONFLUENT_MAGIC = b"\x00"
_CT = "application/vnd.schemaregistry.v1+json"
SCHEMA_NOT_FOUND = 40403  # the Confluent API's error_code for an unknown schema id
APICURIO_CCOMPAT_PATH = "/apis/ccompat/v7"


class RegistryHTTPError(RegistryError):
    """The registry answered with an HTTP error: its status and, when the body is the
    Confluent API's error object, its ``error_code``."""

    def __init__(self, message: str, *, status: int, error_code: int | None) -> None:
        super().__init__(message)
        self.status = status
        self.error_code = error_code


def _error_code(body: str) -> int | None:
    try:
        code = json.loads(body).get("error_code")
    except (ValueError, AttributeError):
        return None
    return code if isinstance(code, int) else None


class RegistryClient:
    """Register and look up schemas on a Confluent-compatible registry."""

    def __init__(self, url: str, *, timeout: float = 5.0) -> None:
        try:
            parts = urllib.parse.urlsplit(url)
            port = parts.port
        except ValueError:
            parts, port = None, None
        if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
            raise RegistryError(
                f"registry URL must be http(s)://host[:port], got {redact_url(url)!r}"
            )
        self._auth: str | None = None
        if parts.username:
            cred = f"{urllib.parse.unquote(parts.username)}:{urllib.parse.unquote(parts.password or '')}"
            self._auth = "Basic " + base64.b64encode(cred.encode()).decode()
        netloc = parts.hostname + (f":{port}" if port else "")
        self.base = urllib.parse.urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))
        self.timeout = timeout
        self._ids: dict[tuple[str, str], int] = {}
        self._schemas: dict[int, dict[str, Any]] = {}
        self._lock = threading.Lock()

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.base + path, data=data, method=method)
        req.add_header("Accept", _CT)
        if data is not None:
            req.add_header("Content-Type", _CT)
        if self._auth:
            req.add_header("Authorization", self._auth)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                return json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as exc:
            text = exc.read(65536).decode(errors="replace")
            code, detail = _error_code(text), text[:300]
            hint = ""
            if exc.code == 404 and not (code is not None and 40400 <= code < 40500):
                # Not the registry's "subject/version/schema not found" (4040x): this URL
                # is no Confluent-compatible API, e.g. Apicurio's root without its path.
                hint = (
                    f" ({self.base} answers like no Confluent-compatible registry API; "
                    f"for Apicurio Registry the URL ends in {APICURIO_CCOMPAT_PATH})"
                )
            raise RegistryHTTPError(
                f"registry {method} {path}: HTTP {exc.code}: {detail}{hint}",
                status=exc.code,
                error_code=code,
            ) from exc
        except (OSError, ValueError) as exc:
            raise RegistryError(f"registry {self.base} unreachable: {exc}") from exc

    def register(self, subject: str, schema: dict[str, Any]) -> int:
        text = json.dumps(schema, separators=(",", ":"))
        with self._lock:
            cached = self._ids.get((subject, text))
        if cached is not None:
            return cached
        quoted = urllib.parse.quote(subject, safe="")
        answer = self._call("POST", f"/subjects/{quoted}/versions", {"schema": text})
        if not isinstance(answer, dict) or not isinstance(answer.get("id"), int):
            raise RegistryError(f"registry answered {answer!r} to a registration")
        with self._lock:
            self._ids[(subject, text)] = answer["id"]
        return int(answer["id"])

    def schema(self, schema_id: int) -> dict[str, Any]:
        with self._lock:
            cached = self._schemas.get(schema_id)
        if cached is not None:
            return cached
        try:
            answer = self._call("GET", f"/schemas/ids/{schema_id}")
        except RegistryHTTPError as exc:
            # Only the registry's own "schema not found" (Confluent's error code 40403,
            # which Apicurio and Karapace answer too) means the id is unknown: a bare 404
            # from a wrong URL must not turn every record into a dead letter.
            if exc.status == 404 and exc.error_code == SCHEMA_NOT_FOUND:
                raise UnknownSchemaError(f"schema id {schema_id} is not in the registry") from exc
            raise
        parsed: dict[str, Any] = json.loads(answer["schema"])
        with self._lock:
            self._schemas[schema_id] = parsed
        return parsed


def _subject(schema: dict[str, Any]) -> str:
    return f"{schema['namespace']}.{schema['name']}"


class RegistryEncoder:
    """``encode(record)`` in Confluent wire format, registering the schema on first use."""

    def __init__(self, url_or_client: str | RegistryClient) -> None:
        self.client = (
            url_or_client
            if isinstance(url_or_client, RegistryClient)
            else RegistryClient(url_or_client)
        )
        self._headers: dict[str, bytes] = {}

    def prepare(self) -> None:
        """Register both record schemas now (``RegistryError`` if the registry fails)."""
        for name in ("usage_event", "request_end"):
            self._header(name)

    @property
    def ready(self) -> bool:
        return len(self._headers) == 2

    def _header(self, record_name: str, *, block: bool = True) -> bytes:
        head = self._headers.get(record_name)
        if head is None:
            if not block:
                raise RegistryError(f"schema {record_name} is not registered yet")
            import nodemeter_schemas

            schema = nodemeter_schemas.load(record_name)
            schema_id = self.client.register(_subject(schema), schema)
            head = CONFLUENT_MAGIC + schema_id.to_bytes(4, "big")
            self._headers[record_name] = head
        return head

    def encode(self, record: Record, *, block: bool = True) -> bytes:
        """``block=False``: never call the registry here; ``RegistryError`` while the
        schema is not registered yet (the ``Meter`` registers in the background)."""
        if isinstance(record, UsageEvent):
            name, payload = "usage_event", usage_event_to_avro(record)
        else:
            name, payload = "request_end", request_end_to_avro(record)
        buf = io.BytesIO()
        buf.write(self._header(name, block=block))
        fastavro.schemaless_writer(buf, schema_entry(name).parsed, payload)
        return buf.getvalue()


def decode_confluent(data: bytes, client: RegistryClient) -> Record:
    """Decode Confluent wire-format bytes, resolving to nodemeter's newest schema."""
    if len(data) < 5 or data[:1] != CONFLUENT_MAGIC:
        raise DecodeError(
            "not Confluent wire format (magic byte 0 + schema id)", reason="bad_magic"
        )
    writer = client.schema(int.from_bytes(data[1:5], "big"))
    name = {"UsageEvent": "usage_event", "RequestEnd": "request_end"}.get(writer.get("name", ""))
    if name is None:
        raise UnknownSchemaError(f"registry schema {writer.get('name')!r} is not a usage record")
    reader = schema_entry(name).parsed
    parsed = fastavro.parse_schema(writer)
    compile_check(parsed)(data, 5)  # fastavro would wrap negative enum/union indices
    try:
        value = fastavro.schemaless_reader(io.BytesIO(data[5:]), parsed, reader)
    except Exception as exc:
        raise DecodeError(f"malformed {name} body: {exc!r}") from exc
    assert isinstance(value, dict)
    return usage_event_from_avro(value) if name == "usage_event" else request_end_from_avro(value)
