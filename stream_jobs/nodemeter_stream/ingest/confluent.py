"""Usage records in Confluent Schema Registry framing, as the SDK writes them when
``NODEMETER_SCHEMA_REGISTRY_URL`` is set: ``00`` + 4-byte schema id + Avro body.

The writer schema of each id comes from the registry, once. Fetching it is I/O, so the
ingest agent resolves a batch's unknown ids *before* it classifies the batch
(:meth:`SchemaCache.missing` names them, the agent fetches them off the event loop and
:meth:`SchemaCache.put` keeps them); classification then only reads this cache (pure):
an id the registry does not know is a dead letter (``unknown_schema``), and while the
registry cannot be reached the batch waits (back-pressure, like a ClickHouse outage),
so no record is dead-lettered for a transient fault.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from nodemeter.errors import UnknownSchemaError
from nodemeter.registry import CONFLUENT_MAGIC


def schema_id(payload: bytes | None) -> int | None:
    """The schema id of a Confluent-framed payload, else None."""
    if payload is None or len(payload) < 5 or payload[:1] != CONFLUENT_MAGIC:
        return None
    return int.from_bytes(payload[1:5], "big")


class SchemaCache:
    """Writer schemas by registry id; ``absent`` ids are known to be missing (404)."""

    def __init__(self) -> None:
        self.schemas: dict[int, dict[str, Any]] = {}
        self.absent: set[int] = set()

    def missing(self, payloads: Iterable[bytes | None]) -> set[int]:
        """The ids of these payloads not resolved yet."""
        ids = {schema_id(p) for p in payloads}
        return {i for i in ids if i is not None and i not in self.schemas and i not in self.absent}

    def put(self, schema_id: int, schema: dict[str, Any] | None) -> None:
        if schema is None:
            self.absent.add(schema_id)
        else:
            self.schemas[schema_id] = schema

    def schema(self, schema_id: int) -> dict[str, Any]:
        """The cached writer schema (``decode_confluent``'s client interface; no I/O)."""
        found = self.schemas.get(schema_id)
        if found is None:
            raise UnknownSchemaError(f"schema id {schema_id} is not in the schema registry")
        return found
