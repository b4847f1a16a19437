-- 080_ingest_tallies.sql
ALTER TABLE worker_state ON CLUSTER nodemeter
    MODIFY TTL
    toDateTime(written_at) + INTERVAL 2 DAY DELETE WHERE scope = 'request' AND open = 0,
    toDateTime(written_at) + INTERVAL 400 DAY DELETE WHERE scope = 'tally';

CREATE VIEW IF NOT EXISTS ingest_tallies ON CLUSTER nodemeter AS
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

CREATE VIEW IF NOT EXISTS ingest_tallies_all ON CLUSTER nodemeter AS
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
