-- Budget status of one tenant for the budget windows overlapping [start, end): the
-- budget's limit (from its alerts, budget_alerts FINAL, migration 006), the highest
-- threshold crossed, and the spend now, recomputed from the lines with the worker's
-- rule: a tenant-wide budget counts every line (net of credits) of its window, a
-- workflow budget the usage lines of its workflow. status: exceeded (spend >= limit),
-- warning (>= 80 %), ok. Budget definitions are not stored in ClickHouse, so only
-- budgets that raised at least one alert in the window are listed.
-- Reads only the alert windows: their whole hours from cost_hourly (051), the partial
-- hours at their edges (tenant time zones, e.g. +05:30) from priced_lines FINAL, so the
-- spend equals the sum of the window's lines to the unit.
WITH
    alerts AS
    (
        SELECT
            budget,
            workflow,
            window_id,
            window_start,
            window_end,
            currency,
            max(limit_amount) AS limit_amount,
            max(hard_limit) AS hard_limit,
            max(threshold_pct) AS max_threshold_pct,
            toUInt64(count()) AS alerts,
            max(crossed_at) AS last_alert_at
        FROM budget_alerts FINAL
        WHERE tenant = {tenant:String}
          AND window_end > {start:DateTime('UTC')}
          AND window_start < {end:DateTime('UTC')}
        GROUP BY budget, workflow, window_id, window_start, window_end, currency
    ),
    (SELECT (min(window_start), max(window_end)) FROM alerts) AS bounds,
    -- the money of the alert windows: whole hours from cost_hourly (051), the lines of
    -- the hours a window only partly covers from priced_lines FINAL
    spend_rows AS
    (
        SELECT toDateTime64(hour, 6, 'UTC') AS t, toUInt8(1) AS whole, workflow, line_kind,
               currency, sum(amount) AS amount
        FROM cost_hourly
        WHERE tenant = {tenant:String}
          AND hour >= bounds.1
          AND hour < bounds.2
        GROUP BY t, workflow, line_kind, currency
        UNION ALL
        SELECT event_time, toUInt8(0), workflow, line_kind, currency, amount
        FROM priced_lines FINAL
        WHERE tenant = {tenant:String}
          AND toStartOfHour(event_time) IN
          (
              SELECT arrayJoin(arrayFilter(x -> x.1 != x.2,
                  [(toStartOfHour(window_start), window_start),
                   (toStartOfHour(window_end), window_end)])).1
              FROM alerts
          )
    ),
    spend AS
    (
        SELECT a.budget AS budget, a.workflow AS workflow, a.window_id AS window_id,
               sum(l.amount) AS spend
        FROM alerts AS a
        INNER JOIN spend_rows AS l ON l.currency = a.currency
        WHERE (a.workflow = '' OR (l.workflow = a.workflow AND l.line_kind = 'usage'))
          AND l.t >= a.window_start
          AND if(l.whole = 1,
                 l.t + INTERVAL 1 HOUR <= a.window_end,
                 l.t < a.window_end
                 AND NOT (toStartOfHour(l.t) >= a.window_start
                          AND toStartOfHour(l.t) + INTERVAL 1 HOUR <= a.window_end))
        GROUP BY a.budget, a.workflow, a.window_id
    )
SELECT
    a.budget AS budget,
    a.workflow AS workflow,
    a.window_id AS window_id,
    a.window_start AS window_start,
    a.window_end AS window_end,
    a.currency AS currency,
    a.limit_amount AS limit_amount,
    toDecimal128(s.spend, 12) AS spend,
    a.limit_amount - toDecimal128(s.spend, 12) AS remaining,
    if(a.limit_amount > 0, toDecimal128(s.spend * 100 / a.limit_amount, 2), toDecimal128(0, 2)) AS used_pct,
    multiIf(s.spend >= a.limit_amount, 'exceeded', s.spend * 100 >= a.limit_amount * 80, 'warning', 'ok') AS status,
    a.max_threshold_pct AS max_threshold_pct,
    a.hard_limit AS hard_limit,
    a.alerts AS alerts,
    a.last_alert_at AS last_alert_at
FROM alerts AS a
LEFT JOIN spend AS s USING (budget, workflow, window_id)
ORDER BY window_start, budget, workflow
