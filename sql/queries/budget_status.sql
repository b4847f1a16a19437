-- Budget status of one tenant for the budget windows overlapping [start, end): the
-- budget's limit (from its alerts, budget_alerts FINAL, migration 006), the highest
-- threshold crossed, and the spend now, recomputed from priced_lines FINAL with the
-- worker's rule: a tenant-wide budget counts every line (net of credits) of its window,
-- a workflow budget the usage lines of its workflow. status: exceeded (spend >= limit),
-- warning (>= 80 %), ok. Budget definitions are not stored in ClickHouse, so only
-- budgets that raised at least one alert in the window are listed.
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
    spend AS
    (
        SELECT a.budget AS budget, a.workflow AS workflow, a.window_id AS window_id,
               sum(l.amount) AS spend
        FROM alerts AS a
        INNER JOIN
        (
            SELECT amount, line_kind, workflow, currency, event_time
            FROM priced_lines FINAL
            WHERE tenant = {tenant:String}
        ) AS l ON l.currency = a.currency
        WHERE l.event_time >= a.window_start AND l.event_time < a.window_end
          AND (a.workflow = '' OR (l.workflow = a.workflow AND l.line_kind = 'usage'))
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
