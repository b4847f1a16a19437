-- The workflow graph of a tenant in [start, end): an edge parent_node -> node for every
-- span whose parent span ran a different node, with how many requests took it.
-- Reads usage_events FINAL (span ids and parents live only in the raw table).
WITH spans AS
(
    SELECT DISTINCT request_id, span_id, parent_span_id, node_id, workflow
    FROM usage_events FINAL
    WHERE tenant = {tenant:String}
      AND event_time >= {start:DateTime('UTC')}
      AND event_time < {end:DateTime('UTC')}
)
SELECT
    c.workflow AS workflow,
    p.node_id AS parent_node,
    c.node_id AS node,
    uniqExact(c.request_id) AS requests
FROM spans AS c
INNER JOIN spans AS p ON p.request_id = c.request_id AND p.span_id = c.parent_span_id
WHERE c.parent_span_id != '' AND p.node_id != c.node_id
GROUP BY workflow, parent_node, node
ORDER BY workflow, parent_node, node
