-- 060_priced_lines_rate_match.sql
ALTER TABLE priced_lines ON CLUSTER nodemeter
    ADD COLUMN IF NOT EXISTS rate_match LowCardinality(String) DEFAULT '';

CREATE OR REPLACE TABLE priced_lines_all ON CLUSTER nodemeter AS priced_lines
ENGINE = Distributed('nodemeter', currentDatabase(), priced_lines, cityHash64(tenant));
