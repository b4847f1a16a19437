-- Ingest tallies (issue 14, `nodemeter reconcile`): per batch and source partition of the
-- usage topic, what became of its records. The worker writes them as worker_state rows
-- (scope 'tally') in the same insert as its progress of record, so a batch's tally is
-- stored exactly when the batch is recorded as applied, whatever crashes in between:
--   first_offset .. offset  the batch's offsets on that partition;
--   key                     first_offset, zero-padded (a re-sent insert collapses);
--   value                   JSON counts: records, events (usage events stored),
--                           duplicates, dead_letters, other (request ends).
-- A worker without this migration writes the same rows (worker_state takes any scope);
-- the migration only bounds how long they are kept and gives analysts a view.
--
-- TTL: tallies are kept 400 days, as long as usage_events and dead_letters (at least 90
-- are required for reconciliation after the fact). The request-state rule of 040 stays.
ALTER TABLE worker_state MODIFY TTL
    toDateTime(written_at) + INTERVAL 2 DAY DELETE WHERE scope = 'request' AND open = 0,
    toDateTime(written_at) + INTERVAL 400 DAY DELETE WHERE scope = 'tally';

-- One row per tallied batch and partition. Batches applied before the worker wrote
-- tallies have none: reconcile reports their offsets as not tallied (not checked).
CREATE VIEW IF NOT EXISTS ingest_tallies AS
SELECT
    group_id,
    topic,
    partition,
    first_offset,
    offset AS last_offset,
    JSONExtractUInt(value, 'records')      AS records,
    JSONExtractUInt(value, 'events')       AS events,
    JSONExtractUInt(value, 'duplicates')   AS duplicates,
    JSONExtractUInt(value, 'dead_letters') AS dead_letters,
    JSONExtractUInt(value, 'other')        AS other,
    written_at
FROM worker_state FINAL
WHERE scope = 'tally';
