-- Price books as loaded by the pricing worker (files under NODEMETER_PRICEBOOKS): one row
-- per (book, version, rate, tier). Every priced line names (price_book,
-- price_book_version, meter, tier); join here to see the price it used.
--
-- Rows are written when a worker starts, so the table always holds the versions in
-- force; an edited file with the same version number replaces the old rows at merge
-- (ReplacingMergeTree on the rate's identity, latest loaded_at wins). Publish a change
-- as a new version with a later effective_from instead: the past stays as priced.
-- up_to = 0 on the last tier means unbounded; tier = 0: not tiered (flat, package).
CREATE TABLE IF NOT EXISTS price_book_rates
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
ENGINE = ReplacingMergeTree(loaded_at)
ORDER BY (price_book, version, meter, model, provider, gpu_type, tier)
SETTINGS non_replicated_deduplication_window = 1000;
