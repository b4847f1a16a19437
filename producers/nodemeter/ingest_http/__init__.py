"""``nodemeter ingest-http``: usage as CloudEvents over HTTP, into the usage topic.

    cloudevents  body -> events -> records (pure; the rules of ``nodemeter emit``)
    keys         API keys per tenant: loaded hashed, compared in constant time
    ratelimit    token buckets per key (pure; the clock is injected)
    metrics      counters in the Prometheus text format
    server       the HTTP service: auth, limits, produce through ``Meter.emit_settled``,
                 answer once each record is acknowledged or spooled; health, drain
    cli          the command

Standard library HTTP only (``http.server``), so the base SDK install runs it.
docs/http.md is the reference: endpoints, the mapping, status codes, guarantees.
"""
