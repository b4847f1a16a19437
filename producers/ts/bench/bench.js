// Emit overhead of the SDK against kafkajs' raw produce of the same bytes, in one run.
//
//   npm run build && NODEMETER_KAFKA_BOOTSTRAP=127.0.0.1:19092 node bench/bench.js \
//     [--events 50000] [--spans 10000] [--rounds 3] [--compression gzip|none]
//
// A broker must answer at NODEMETER_KAFKA_BOOTSTRAP (default 127.0.0.1:19092: `make kafka-up`);
// the run creates its own topic (4 partitions) and deletes it at the end. Paths:
// - raw sendBatch: the very same encoded keys and values through a kafkajs producer with the
//   SDK's settings (idempotent, acks=all, one request in flight, the CRC32 partitioner, the
//   same compression), in batches of 10,000 (the SDK's maxBatch), each awaited;
// - sdk emit: Meter.emit(UsageEvent) (validation + encoding + queue) for every event, then
//   flush (rates include waiting for every acknowledgement);
// - sdk span: meter.node(...) with one span.record(...) inside a request: median and p99 µs
//   per span (its encoding and queueing; delivery is batched behind it).
// Each throughput path runs --rounds times, interleaved; the median round is reported, and
// the ratio of each round's SDK rate to the same round's raw rate, whose median is the last line.
const { performance } = require("node:perf_hooks");
const os = require("node:os");
const { CompressionTypes, Kafka, logLevel } = require("kafkajs");
const {
  KafkaTransport, Meter, crc32Partitioner, encodeUsageEvent, eventIdFor, keyFor, nowMicros,
} = require("../dist/src/index.js");

function args() {
  const out = { events: 50_000, spans: 10_000, rounds: 3, compression: "gzip" };
  const argv = process.argv.slice(2);
  for (let i = 0; i < argv.length; i += 2) {
    const name = argv[i].replace(/^--/, "");
    if (!(name in out)) throw new Error(`unknown option ${argv[i]}`);
    out[name] = name === "compression" ? argv[i + 1] : Number(argv[i + 1]);
  }
  return out;
}

function makeEvents(n) {
  const now = nowMicros();
  const events = [];
  for (let i = 0; i < n; i++) {
    const requestId = `req-${Math.floor(i / 8)}`, spanId = `span-${i % 8}`;
    events.push({
      eventId: eventIdFor("acme", requestId, spanId, 0), tenant: "acme", requestId, nodeId: "llm.summarize",
      spanId, parentSpanId: "root", branchPath: "1", workflow: "rag", model: "gpt-4o", provider: "openai",
      meters: { inputTokens: 800 + (i % 100), outputTokens: 90, cachedInputTokens: 512 },
      eventTime: now, attributes: { region: "eu" }, producer: "nodemeter-ts/0.1.0",
    });
  }
  return events;
}

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const fmt = (x) => Math.round(x).toLocaleString("en-US");

async function main() {
  const opt = args();
  const compression = { gzip: CompressionTypes.GZIP, none: CompressionTypes.None }[opt.compression];
  if (compression === undefined) throw new Error("--compression gzip|none");
  const brokers = (process.env.NODEMETER_KAFKA_BOOTSTRAP ?? "127.0.0.1:19092").split(",");
  const kafka = new Kafka({ clientId: "nodemeter-bench", brokers, logLevel: logLevel.NOTHING });
  const admin = kafka.admin();
  await admin.connect();
  const topic = `bench${Math.random().toString(36).slice(2, 8)}.nodemeter.usage.v1`;
  await admin.createTopics({ topics: [{ topic, numPartitions: 4, replicationFactor: 1 }], waitForLeaders: true });

  const events = makeEvents(opt.events);
  const encoded = events.map((e) => ({ key: keyFor(e.tenant, e.requestId), value: encodeUsageEvent(e) }));
  console.log(`${fmt(opt.events)} events of ${encoded[0].value.length} bytes; broker ${brokers.join(",")}; ` +
    `node ${process.version}; kafkajs ${require("kafkajs/package.json").version}; compression ${opt.compression}; ` +
    `load average ${os.loadavg().map((x) => x.toFixed(2)).join(" ")} on ${os.cpus().length} cores`);

  const raw = kafka.producer({ idempotent: true, maxInFlightRequests: 1, createPartitioner: crc32Partitioner,
    allowAutoTopicCreation: false });
  await raw.connect();
  const rawSend = async (messages) => {
    for (let i = 0; i < messages.length; i += 10_000) {
      await raw.sendBatch({ acks: -1, compression, topicMessages: [{ topic, messages: messages.slice(i, i + 10_000) }] });
    }
  };
  await rawSend(encoded.slice(0, 1)); // warm up: connection, metadata, producer id

  const transport = new KafkaTransport({ brokers, spoolDir: null, compression: opt.compression });
  const meter = new Meter({ topic, tenants: null, transport });
  meter.emit(events[0]);
  await meter.flush(30_000);

  const paths = {
    "raw kafkajs sendBatch": async () => rawSend(encoded),
    "sdk Meter.emit()": async () => {
      for (const e of events) meter.emit(e);
      await meter.flush(120_000);
    },
  };
  const rates = Object.fromEntries(Object.keys(paths).map((k) => [k, []]));
  for (let r = 0; r < opt.rounds; r++) {
    for (const [label, fn] of Object.entries(paths)) {
      const t0 = performance.now();
      await fn();
      rates[label].push(opt.events / ((performance.now() - t0) / 1000));
    }
  }
  console.log(`--- throughput (median of ${opt.rounds} rounds; rates include every acknowledgement) ---`);
  for (const [label, rs] of Object.entries(rates)) {
    console.log(`${label.padEnd(24)} ${fmt(median(rs)).padStart(9)} events/s   (rounds: ${fmt(Math.min(...rs))} - ${fmt(Math.max(...rs))})`);
  }

  const samples = [];
  await meter.request({ tenant: "acme", workflow: "bench" }, async () => {
    for (let i = 0; i < opt.spans; i++) {
      const t0 = process.hrtime.bigint();
      await meter.node("llm.summarize", { model: "gpt-4o" }, (span) => {
        span.record({ inputTokens: 800 + (i % 100), outputTokens: 90 });
      });
      samples.push(Number(process.hrtime.bigint() - t0) / 1000);
    }
  });
  await meter.flush(120_000);
  samples.sort((a, b) => a - b);
  console.log(`--- a node span with one usage record (${fmt(opt.spans)} spans) ---`);
  console.log(`span with one record: median ${median(samples).toFixed(1)} µs, p99 ${samples[Math.floor(samples.length * 0.99)].toFixed(1)} µs`);
  const stats = { ...transport.stats };
  await meter.close(30_000);
  await raw.disconnect();
  await admin.deleteTopics({ topics: [topic] }).catch(() => undefined);
  await admin.disconnect();
  console.log(`transport stats: ${JSON.stringify(stats)}`);
  if (stats.failed !== 0 || stats.spooled !== 0) throw new Error("the benchmark must not lose or spool");
  const ratios = rates["sdk Meter.emit()"].map((x, i) => x / rates["raw kafkajs sendBatch"][i]);
  console.log(`sdk Meter.emit() / raw kafkajs sendBatch: ${(100 * median(ratios)).toFixed(1)}% ` +
    `(rounds ${(100 * Math.min(...ratios)).toFixed(0)}% - ${(100 * Math.max(...ratios)).toFixed(0)}%)`);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
