// Emits N one-node requests (one usage event and one request end each), or replays the
// spool, then prints the transport's counters as JSON (the outage test in
// tests/integration/test_ts_sdk.py runs it).
// Usage: NODEMETER_KAFKA_BOOTSTRAP=host:port NODEMETER_SPOOL_DIR=dir \
//          node examples/outage.js emit TOPIC N [WAIT_MS]   # WAIT_MS: stay up until the spool is empty
//        ... node examples/outage.js replay TOPIC
//        ... node examples/outage.js traffic TOPIC STOP_FILE  # requests until STOP_FILE exists,
//            a counters line every 100 ms, then flush and wait (120 s at most) for the spool to empty
const fs = require("node:fs");
const { KafkaTransport, Meter } = require("../dist/src/index.js");

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function main() {
  const [command, topic, n, waitMs] = process.argv.slice(2);
  const transport = new KafkaTransport({ replayIntervalMs: 500 });
  const meter = new Meter({ topic, tenants: null, transport });
  if (command === "emit") {
    for (let i = 0; i < Number(n); i++) {
      await meter.request({ tenant: "acme", requestId: `ts-outage-${i}`, workflow: "outage" }, async () => {
        await meter.node("llm", { model: "gpt-4o" }, async (span) => span.record({ inputTokens: 10 + i, outputTokens: 1 }));
      });
    }
    await meter.flush(60_000);
    const spooledAfterFlush = transport.stats.spooled;
    console.log(JSON.stringify({ phase: "flushed", ...transport.stats })); // all delivered or spooled
    const deadline = Date.now() + Number(waitMs ?? 0);
    while (transport.spooledFiles() > 0 && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
    await meter.close(30_000);
    console.log(JSON.stringify({ ...transport.stats, spooledAfterFlush, left: transport.spooledFiles() }));
  } else if (command === "traffic") {
    const stopFile = n;
    let emitted = 0;
    const report = setInterval(() => console.log(JSON.stringify({ ...transport.stats, emitted })), 100);
    while (!fs.existsSync(stopFile)) { // a service that keeps serving requests throughout
      await meter.request({ tenant: "acme", requestId: `ts-traffic-${emitted}`, workflow: "outage" }, async () => {
        await meter.node("llm", { model: "gpt-4o" }, async (span) => span.record({ inputTokens: 10 + emitted, outputTokens: 1 }));
      });
      emitted++;
      await sleep(10);
    }
    await meter.flush(60_000);
    const deadline = Date.now() + 120_000;
    while (transport.spooledFiles() > 0 && Date.now() < deadline) await sleep(200);
    clearInterval(report);
    await meter.close(30_000);
    console.log(JSON.stringify({ ...transport.stats, emitted, left: transport.spooledFiles(), final: true }));
  } else if (command === "replay") {
    const sent = await meter.replay();
    await meter.close(30_000);
    console.log(JSON.stringify({ ...transport.stats, sent, left: transport.spooledFiles() }));
  } else {
    throw new Error(`unknown command ${command}`);
  }
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
