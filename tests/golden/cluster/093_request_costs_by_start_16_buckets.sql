-- 093_request_costs_by_start_16_buckets.sql
ALTER TABLE request_costs_by_start ON CLUSTER nodemeter
    DROP PROJECTION IF EXISTS bucket_max;

ALTER TABLE request_costs_by_start ON CLUSTER nodemeter
    ADD PROJECTION IF NOT EXISTS bucket_max_16
(
    SELECT tenant, start_hour, cityHash64(request_id) % 16, max(amount)
    GROUP BY tenant, start_hour, cityHash64(request_id) % 16
);

ALTER TABLE request_costs_by_start ON CLUSTER nodemeter
    MATERIALIZE PROJECTION bucket_max_16
SETTINGS mutations_sync = 2;
