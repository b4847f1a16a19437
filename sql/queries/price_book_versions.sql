-- The price book versions a tenant's usage was priced with in [start, end): for each
-- (book, version), when it took effect, its currency and number of rates (from
-- price_book_rates FINAL, migration 004), and the lines and amount priced under it
-- (priced_lines FINAL). A version that priced nothing in the period is not listed.
WITH
    priced AS
    (
        SELECT price_book, price_book_version AS version, currency,
               toUInt64(count()) AS lines, sum(amount) AS amount,
               min(event_time) AS first_event, max(event_time) AS last_event
        FROM priced_lines FINAL
        WHERE tenant = {tenant:String}
          AND event_time >= {start:DateTime('UTC')}
          AND event_time < {end:DateTime('UTC')}
        GROUP BY price_book, version, currency
    ),
    books AS
    (
        SELECT price_book, version, min(effective_from) AS effective_from,
               toUInt64(count()) AS rates
        FROM price_book_rates FINAL
        GROUP BY price_book, version
    )
SELECT
    p.price_book AS price_book,
    p.version AS version,
    b.effective_from AS effective_from,
    p.currency AS currency,
    b.rates AS rates,
    p.lines AS lines,
    p.amount AS amount,
    p.first_event AS first_event,
    p.last_event AS last_event
FROM priced AS p
LEFT JOIN books AS b ON b.price_book = p.price_book AND b.version = p.version
ORDER BY price_book, version, currency
