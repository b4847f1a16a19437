"""A changelog-backed map on a Faust memory:// table, written with an explicit partition.

Faust derives a table write's changelog partition from the *current* event, which a
batch (``noack_take``) or a timer does not have. Writes here name the partition of the
source record that owns the key, so the changelog stays co-partitioned with the source
topic and a restarted worker recovers each key with its partition.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any


class ChangelogMap:
    def __init__(self, table: Any) -> None:
        self.table = table

    @property
    def _data(self) -> Any:
        return self.table.data

    def get(self, key: str) -> Any:
        return self._data.get(key)

    def __contains__(self, key: str) -> bool:
        return key in self._data

    def __len__(self) -> int:
        return len(self._data)

    def items(self) -> Iterator[tuple[str, Any]]:
        return iter(list(self._data.items()))

    def put(self, key: str, value: Any, *, partition: int) -> Any:
        """Set the key; returns the changelog send's future (await it for durability)."""
        self._data[key] = value
        return self.table.send_changelog(partition, key, value)

    def delete(self, key: str, *, partition: int) -> Any:
        self._data.pop(key, None)
        return self.table.send_changelog(partition, key, None, value_serializer="raw")  # tombstone
