// A request with a fan-out of two branches, sent to Kafka; prints its request id.
// Usage: NODEMETER_KAFKA_BOOTSTRAP=host:port node examples/parallel.js TOPIC REQUEST_ID
// (TLS and SASL from NODEMETER_KAFKA_SECURITY_PROTOCOL and the rest, as the README says).
// Exits 1 when Kafka did not take every record (no spool here).
const { KafkaTransport, Meter } = require("../dist/src/index.js");

async function main() {
  const [topic, requestId] = process.argv.slice(2);
  const transport = new KafkaTransport({ spoolDir: null });
  const meter = new Meter({ topic, tenants: null, transport });
  await meter.request({ tenant: "acme", requestId, workflow: "map-reduce" }, async () => {
    await meter.node("split", async (span) => span.record({ apiCalls: 1, cpuMs: 3 }));
    await meter.parallel([1, 2].map((i) => () =>
      meter.node("llm.summarize", { model: "gpt-4o", provider: "openai" }, async (span) => {
        span.record({ inputTokens: 100 * i, outputTokens: 10 * i, cachedInputTokens: i });
      })));
    await meter.node("merge", async (span) => span.record({ apiCalls: 1 }));
  });
  await meter.close();
  if (transport.stats.failed > 0) {
    console.error(`${transport.stats.failed} record(s) not delivered: ${transport.error}`);
    process.exit(1);
  }
  console.log(JSON.stringify({ requestId }));
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
