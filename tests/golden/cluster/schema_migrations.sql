-- schema_migrations (ledger)
CREATE TABLE IF NOT EXISTS schema_migrations ON CLUSTER nodemeter
(
    version    UInt32,
    name       String,
    checksum   String,
    applied_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{uuid}/global', '{replica}')
ORDER BY version;
