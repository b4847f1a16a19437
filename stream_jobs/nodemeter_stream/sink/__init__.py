"""Sink stage: the ClickHouse connection, migrations, batched idempotent writes and
the progress of record (what is stored, per source partition)."""
