-- priced_lines.cache_savings: on cached_input_tokens lines, what those tokens would have
-- cost at the model's input_tokens list price (flat price or first tier, same book
-- version) minus what they cost; 0 on every other line. Exact Decimal, set by the
-- pricing worker when it prices the line (docs/pricing.md, "Cache savings").
ALTER TABLE priced_lines ADD COLUMN IF NOT EXISTS cache_savings Decimal(38, 12) DEFAULT 0;
