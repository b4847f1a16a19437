-- GPU milliseconds per node and GPU type, split by how they were obtained: MEASURED
-- (CUDA events / NVML) or ESTIMATED (share of a batch, wall clock). Billable usage only.
-- Reads the raw audit table with FINAL so a duplicate event is never counted twice,
-- even before merges.
SELECT
    node_id,
    gpu_type,
    sumIf(gpu_ms, gpu_source = 'MEASURED') AS measured_ms,
    sumIf(gpu_ms, gpu_source = 'ESTIMATED') AS estimated_ms,
    sum(gpu_ms) AS total_ms,
    countIf(gpu_source = 'MEASURED') AS measured_events,
    countIf(gpu_source = 'ESTIMATED') AS estimated_events
FROM usage_events FINAL
WHERE tenant = {tenant:String}
  AND event_time >= {start:DateTime('UTC')}
  AND event_time < {end:DateTime('UTC')}
  AND gpu_ms > 0
  AND billable
GROUP BY node_id, gpu_type
ORDER BY total_ms DESC, node_id, gpu_type
