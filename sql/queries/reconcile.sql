-- Reconciliation over all history, per tenant and currency: the money of record
-- (priced_lines, FINAL) against every rollup fed from it, and the raw events
-- (usage_events, FINAL) against the usage rollup. ok = 1 when they agree to the unit.
-- request_costs_by_start holds only the lines that name a request: checked against those.
-- A mismatch means a rollup missed or double-counted inserts (e.g. a duplicate line
-- that reached priced_lines): `nodemeter rebuild` recomputes the rollups from the base
-- tables. Amounts and counts are both shown as Decimal(38, 12) so one column holds them.
WITH
    lines AS
    (
        SELECT tenant, currency, sum(amount) AS amount, toUInt64(count()) AS n
        FROM priced_lines FINAL
        GROUP BY tenant, currency
    ),
    request_lines AS
    (
        SELECT tenant, currency, sum(amount) AS amount, toUInt64(count()) AS n
        FROM priced_lines FINAL
        WHERE request_id != ''
        GROUP BY tenant, currency
    ),
    hourly AS
    (
        SELECT tenant, currency, sum(amount) AS amount, sum(lines) AS n
        FROM cost_hourly GROUP BY tenant, currency
    ),
    minutely AS
    (
        SELECT tenant, currency, sum(amount) AS amount, sum(lines) AS n
        FROM cost_minutely GROUP BY tenant, currency
    ),
    daily AS
    (
        SELECT tenant, currency, sum(amount) AS amount, sum(lines) AS n
        FROM tenant_spend_daily GROUP BY tenant, currency
    ),
    requests AS
    (
        SELECT tenant, currency, sum(amount) AS amount, sum(lines) AS n
        FROM request_node_costs GROUP BY tenant, currency
    ),
    starts AS
    (
        SELECT tenant, currency, sum(amount) AS amount, sum(lines) AS n
        FROM request_costs_by_start GROUP BY tenant, currency
    ),
    raw_events AS
    (
        SELECT tenant, toUInt64(count()) AS n FROM usage_events FINAL GROUP BY tenant
    ),
    hourly_events AS
    (
        SELECT tenant, sum(events) AS n FROM usage_hourly GROUP BY tenant
    ),
    checks AS
    (
        SELECT 'amount: priced_lines = cost_hourly' AS check, tenant, currency,
               toDecimal128(l.amount, 12) AS expected, toDecimal128(r.amount, 12) AS actual
        FROM lines AS l FULL OUTER JOIN hourly AS r USING (tenant, currency)
        UNION ALL
        SELECT 'amount: priced_lines = cost_minutely', tenant, currency,
               toDecimal128(l.amount, 12), toDecimal128(r.amount, 12)
        FROM lines AS l FULL OUTER JOIN minutely AS r USING (tenant, currency)
        UNION ALL
        SELECT 'amount: priced_lines = tenant_spend_daily', tenant, currency,
               toDecimal128(l.amount, 12), toDecimal128(r.amount, 12)
        FROM lines AS l FULL OUTER JOIN daily AS r USING (tenant, currency)
        UNION ALL
        SELECT 'amount: priced_lines = request_node_costs', tenant, currency,
               toDecimal128(l.amount, 12), toDecimal128(r.amount, 12)
        FROM lines AS l FULL OUTER JOIN requests AS r USING (tenant, currency)
        UNION ALL
        SELECT 'amount: priced_lines with a request = request_costs_by_start', tenant, currency,
               toDecimal128(l.amount, 12), toDecimal128(r.amount, 12)
        FROM request_lines AS l FULL OUTER JOIN starts AS r USING (tenant, currency)
        UNION ALL
        SELECT 'lines: priced_lines = cost_hourly', tenant, currency,
               toDecimal128(l.n, 12), toDecimal128(r.n, 12)
        FROM lines AS l FULL OUTER JOIN hourly AS r USING (tenant, currency)
        UNION ALL
        SELECT 'lines: priced_lines = cost_minutely', tenant, currency,
               toDecimal128(l.n, 12), toDecimal128(r.n, 12)
        FROM lines AS l FULL OUTER JOIN minutely AS r USING (tenant, currency)
        UNION ALL
        SELECT 'events: usage_events = usage_hourly', tenant, '',
               toDecimal128(l.n, 12), toDecimal128(r.n, 12)
        FROM raw_events AS l FULL OUTER JOIN hourly_events AS r USING (tenant)
    )
SELECT
    tenant,
    currency,
    check,
    expected,
    actual,
    expected = actual AS ok
FROM checks
ORDER BY tenant, currency, check
