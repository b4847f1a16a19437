-- 004_price_books.sql
CREATE TABLE IF NOT EXISTS price_book_rates ON CLUSTER nodemeter
(
    price_book     LowCardinality(String),
    version        UInt32,
    effective_from DateTime64(6, 'UTC'),
    currency       LowCardinality(String),
    extends        LowCardinality(String) DEFAULT '',
    credit_grant   Decimal(38, 12) DEFAULT 0,
    meter          LowCardinality(String),
    model          LowCardinality(String),
    provider       LowCardinality(String),
    gpu_type       LowCardinality(String),
    charge_model   LowCardinality(String),
    tier           UInt16,
    up_to          UInt64,
    unit_price     Decimal(38, 12),
    package_size   UInt64 DEFAULT 0,
    included_units UInt64 DEFAULT 0,
    loaded_at      DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{uuid}/global', '{replica}', loaded_at)
ORDER BY (price_book, version, meter, model, provider, gpu_type, tier)
SETTINGS replicated_deduplication_window = 1000, replicated_deduplication_window_seconds = 604800;
