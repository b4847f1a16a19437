-- The spans of a tenant's most recent requests in [start, end) (at most {limit}), one row
-- per span with the time it ended, for the workflow graph: nodemeter_stream.analytics.graph
-- turns them into the execution DAG (sequence, fork and join edges, plus nesting).
-- Reads usage_events FINAL (span ids, parents and branch paths live only in the raw table).
WITH recent AS
(
    SELECT request_id
    FROM usage_events FINAL
    WHERE tenant = {tenant:String}
      AND event_time >= {start:DateTime('UTC')}
      AND event_time < {end:DateTime('UTC')}
    GROUP BY request_id
    ORDER BY max(event_time) DESC, request_id
    LIMIT {limit:UInt32}
)
SELECT
    request_id,
    any(workflow) AS workflow,
    span_id,
    any(parent_span_id) AS parent_span_id,
    any(branch_path) AS branch_path,
    any(node_id) AS node_id,
    max(event_time) AS ended_at
FROM usage_events FINAL
WHERE tenant = {tenant:String}
  AND event_time >= {start:DateTime('UTC')}
  AND event_time < {end:DateTime('UTC')}
  AND request_id IN recent
GROUP BY request_id, span_id
ORDER BY request_id, ended_at, span_id
