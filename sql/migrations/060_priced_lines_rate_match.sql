-- How each usage line's rate was found (issue 11): exact (by the model / GPU name that
-- arrived), alias (through a price book alias, e.g. gpt-4o-2024-08-06 -> gpt-4o or
-- "NVIDIA H100 80GB HBM3" -> H100), generic (the event names a model or GPU type the
-- book has no rate for, so a rate without one priced it: a fallback, listed by the
-- library query unmatched_models), unpriced (no rate at all, priced at zero), or empty
-- (the event names neither; settlement, credit and adjustment lines).
-- Lines stored before this migration read as ''.
ALTER TABLE priced_lines ADD COLUMN IF NOT EXISTS rate_match LowCardinality(String) DEFAULT '';
