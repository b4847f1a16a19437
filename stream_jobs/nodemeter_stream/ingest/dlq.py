"""The dead-letter topic's records, sized to fit a Kafka message (pure).

A dead letter carries the source record's key and value so it can be replayed. A
record rejected for its size (``oversize``) can itself be close to the broker's message
limit (1,000,000 bytes by default), and its dead-letter copy, with the envelope, would
then be refused: the batch could never be recorded and the stream would stop. So the
copy on the topic keeps at most :data:`MAX_DLQ_PAYLOAD` bytes of the value and
:data:`MAX_DLQ_KEY` of the key, and says so in ``attributes`` (``payload_truncated``,
``payload_bytes``, ``payload_sha256``, likewise for the key). The ``dead_letters`` table
keeps the whole value, and the source position names the original record.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

from nodemeter.codec import encode_payload
from nodemeter_stream.ingest.decode import DeadLetter

MAX_DLQ_PAYLOAD = 512 * 1024
MAX_DLQ_KEY = 1024
MAX_DETAIL = 2000

Headers = list[tuple[str, bytes]]


def _cut(data: bytes, limit: int, name: str, attributes: dict[str, str]) -> bytes:
    if len(data) <= limit:
        return data
    attributes[f"{name}_truncated"] = "true"
    attributes[f"{name}_bytes"] = str(len(data))
    attributes[f"{name}_sha256"] = hashlib.sha256(data).hexdigest()
    return data[:limit]


def dlq_record(
    d: DeadLetter,
    *,
    now_ms: int,
    max_payload: int = MAX_DLQ_PAYLOAD,
    max_key: int = MAX_DLQ_KEY,
) -> tuple[bytes | None, bytes, Headers]:
    """(key, value, headers) of ``d``'s record on the dead-letter topic."""
    attributes: dict[str, str] = {}
    payload = _cut(d.payload, max_payload, "payload", attributes)
    key = _cut(d.key, max_key, "key", attributes) or None
    value = encode_payload(
        "dead_letter",
        {
            "source_topic": d.source.topic,
            "source_partition": d.source.partition,
            "source_offset": d.source.offset,
            "reason": d.reason,
            "detail": d.detail[:MAX_DETAIL],
            "tenant": d.tenant,
            "event_id": d.event_id or None,
            "record_key": key,
            "payload": payload,
            "received_at": datetime.fromtimestamp(now_ms / 1000, tz=UTC),
            "attributes": attributes,
        },
    )
    headers = [
        ("reason", d.reason.encode()),
        ("source_topic", d.source.topic.encode()),
        ("source_partition", str(d.source.partition).encode()),
        ("source_offset", str(d.source.offset).encode()),
    ]
    return key, value, headers
