-- Issued statements (issue 14): what a tenant is billed for one billing window, final.
--
-- A statement is a draft, computed from priced_lines whenever it is asked for, until it
-- is issued (`nodemeter statement --issue`). Issuing records the exact set of lines on
-- it, and nothing added to priced_lines later changes it: a line for an issued window
-- that arrives afterwards (a late event's delta lines, a repricing adjustment) goes on
-- the tenant's next statement, once (docs/pricing.md, "Statements").
--
-- Issuing writes statement_lines first, then the statements row: the statements row is
-- the commit. A statement is the lines of statement_lines whose (statement_id,
-- content_id) match a statements row; rows of an attempt that crashed before its
-- statements row, or of one that lost a race, match none and are ignored.
--
-- statements: one row per (tenant, window_id). statement_id is a hash of the tenant and
-- the window, so issuing again names the same statement; content_id a hash of its
-- sorted line ids. ReplacingMergeTree(version) with version = 2^63 - issued_at in ns:
-- the row with the greatest version is the earliest issue, so a second issue never
-- replaces the first. Readers use FINAL. totals_* are the exact totals per currency
-- (Decimal(38, 12), never rounded; the rounded figure is computed when shown), kept to
-- check that the recorded lines still add up to what was issued.
-- ORDER BY (tenant, window_id): a tenant's statements are read together. Small: one row
-- per tenant and window, not partitioned.
CREATE TABLE IF NOT EXISTS statements
(
    tenant         LowCardinality(String),
    window_id      String,
    window_start   DateTime64(6, 'UTC'),
    window_end     DateTime64(6, 'UTC'),
    statement_id   String,
    content_id     String,
    issued_at      DateTime64(3, 'UTC'),
    version        UInt64,
    lines          UInt64,
    totals_currency Array(LowCardinality(String)),
    totals_amount  Array(Decimal(38, 12))
)
ENGINE = ReplacingMergeTree(version)
ORDER BY (tenant, window_id);

-- statement_lines: which priced line is on which issued statement, one row per line.
-- window_id is the line's own window (an earlier one for an adjustment carried over).
-- ORDER BY (tenant, statement_id, content_id, line_id): a statement's lines are one
-- range; re-recording the same line collapses.
CREATE TABLE IF NOT EXISTS statement_lines
(
    tenant       LowCardinality(String),
    statement_id String,
    content_id   String,
    line_id      String,
    window_id    String
)
ENGINE = ReplacingMergeTree
ORDER BY (tenant, statement_id, content_id, line_id);
