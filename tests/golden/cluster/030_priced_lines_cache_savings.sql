-- 030_priced_lines_cache_savings.sql
ALTER TABLE priced_lines ON CLUSTER nodemeter
    ADD COLUMN IF NOT EXISTS cache_savings Decimal(38, 12) DEFAULT 0;

CREATE OR REPLACE TABLE priced_lines_all ON CLUSTER nodemeter AS priced_lines
ENGINE = Distributed('nodemeter', currentDatabase(), priced_lines, cityHash64(tenant));
