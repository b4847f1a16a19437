-- request_costs_by_start's threshold projection (091) with 16 request buckets instead of
-- 64 (issue 16). Measured at 100M lines on a settled store: top_requests aggregated the
-- month's 46,000 bucket maxima in about 15 ms, more than the threshold saved there; with
-- 16 buckets (11,500 maxima a month, 384 a day: still more than the 4 x limit + 40
-- candidates for limit <= 86) it takes about 5 ms and the amount index still skips all
-- but a few dozen granules of a month. Same rule as 091: every bucket maximum is the
-- amount of a row the ranking reads and buckets are disjoint, so the N-th largest of
-- them has at least N rows at or above it.
-- Upgrade: the old projection is dropped and the new one built for the stored parts
-- (a mutation: mutations_sync = 2 waits for it; it reads the table once). Each statement
-- can run again.
ALTER TABLE request_costs_by_start DROP PROJECTION IF EXISTS bucket_max;

ALTER TABLE request_costs_by_start ADD PROJECTION IF NOT EXISTS bucket_max_16
(
    SELECT tenant, start_hour, cityHash64(request_id) % 16, max(amount)
    GROUP BY tenant, start_hour, cityHash64(request_id) % 16
);

ALTER TABLE request_costs_by_start MATERIALIZE PROJECTION bucket_max_16
SETTINGS mutations_sync = 2;
