// A request with a fan-out of two branches, sent to Kafka; prints its request id.
// Usage: NODEMETER_KAFKA_BOOTSTRAP=host:port node examples/parallel.js TOPIC REQUEST_ID
const { Meter } = require("../dist/src/index.js");

async function main() {
  const [topic, requestId] = process.argv.slice(2);
  const meter = new Meter({ topic, tenants: null, kafka: { spoolDir: null } });
  await meter.request({ tenant: "acme", requestId, workflow: "map-reduce" }, async () => {
    await meter.node("split", async (span) => span.record({ apiCalls: 1, cpuMs: 3 }));
    await meter.parallel([1, 2].map((i) => () =>
      meter.node("llm.summarize", { model: "gpt-4o", provider: "openai" }, async (span) => {
        span.record({ inputTokens: 100 * i, outputTokens: 10 * i, cachedInputTokens: i });
      })));
    await meter.node("merge", async (span) => span.record({ apiCalls: 1 }));
  });
  await meter.close();
  console.log(JSON.stringify({ requestId }));
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
