import { test } from "node:test";
import * as assert from "node:assert/strict";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { CompressionCodecs, CompressionTypes } from "kafkajs";
import { ConfigError, KafkaTransport } from "../src/index";

// No broker here: these transports are never connected (tests/integration/test_ts_sdk.py
// runs the real one, outage included).

test("compression: gzip by default and none accepted; lz4 without a registered codec is refused", async () => {
  await new KafkaTransport({ spoolDir: null }).close(100);
  await new KafkaTransport({ spoolDir: null, compression: "none" }).close(100);
  for (const name of ["lz4", "zstd", "snappy"] as const) {
    assert.throws(() => new KafkaTransport({ spoolDir: null, compression: name }),
      (err: unknown) => err instanceof ConfigError && err.message.includes("CompressionCodecs"));
  }
  assert.throws(() => new KafkaTransport({ spoolDir: null, compression: "brotli" as never }), ConfigError);
});

test("compression: a codec registered on kafkajs is taken", async () => {
  const codecs = CompressionCodecs as Record<number, () => unknown>;
  const before = codecs[CompressionTypes.LZ4]!;
  codecs[CompressionTypes.LZ4] = () => ({ compress: async () => Buffer.alloc(0), decompress: async () => Buffer.alloc(0) });
  try {
    await new KafkaTransport({ spoolDir: null, compression: "lz4" }).close(100);
  } finally {
    codecs[CompressionTypes.LZ4] = before;
  }
});

test("replayIntervalMs is bounded", () => {
  assert.throws(() => new KafkaTransport({ spoolDir: null, replayIntervalMs: 0 }), ConfigError);
  assert.throws(() => new KafkaTransport({ spoolDir: null, replayIntervalMs: 4_000_000 }), ConfigError);
});

test("spooledFiles counts waiting files and ones a dead process had claimed", async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "nm-spool-"));
  try {
    fs.writeFileSync(path.join(dir, "000000000000001-1-a.spool"), "");
    fs.writeFileSync(path.join(dir, "000000000000002-1-b.spool.999999999.replaying"), "");
    fs.writeFileSync(path.join(dir, "000000000000003-1-c.spool.tmp"), ""); // not renamed yet: not counted
    const t = new KafkaTransport({ spoolDir: dir });
    assert.equal(t.spooledFiles(), 2);
    await t.close(100);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test("a produce request stays under maxBatch records and maxBatchBytes", async () => {
  const t = new KafkaTransport({ spoolDir: null, maxBatch: 100, maxBatchBytes: 10_000 });
  const split = (t as unknown as { batchLength(r: unknown[], start?: number): number }).batchLength.bind(t);
  const rec = (n: number) => ({ topic: "t", key: Buffer.alloc(10), value: Buffer.alloc(n) });
  assert.equal(split(Array.from({ length: 500 }, () => rec(10))), 100); // 60 bytes each: the count limit
  assert.equal(split(Array.from({ length: 500 }, () => rec(950))), 10); // 1000 bytes each: the byte limit
  assert.equal(split([rec(50_000), rec(10)]), 1); // one record over the limit still goes alone
  assert.equal(split(Array.from({ length: 15 }, () => rec(950)), 10), 5);
  assert.throws(() => new KafkaTransport({ spoolDir: null, maxBatchBytes: 0 }), ConfigError);
  await t.close(100);
});

test("claims of a dead process, or of this pid in an earlier run (pid 1 again), are taken back", async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "nm-spool-"));
  const line = JSON.stringify({ t: "t", k: Buffer.from("acme/r").toString("base64"), v: Buffer.from("x").toString("base64") }) + "\n";
  const other = new KafkaTransport({ spoolDir: null }); // alive in this process: its claim stays
  const otherToken = (other as unknown as { token: string }).token;
  const names = {
    earlierRun: `000000000000001-1-a.spool.${process.pid}-zzzzzz.replaying`,
    deadPid: "000000000000002-1-b.spool.999999999.replaying",
    live: `000000000000003-1-c.spool.${process.pid}-${otherToken}.replaying`,
  };
  try {
    for (const n of Object.values(names)) fs.writeFileSync(path.join(dir, n), line);
    const t = new KafkaTransport({ spoolDir: dir, brokers: ["127.0.0.1:1"] }); // nothing listens
    await assert.rejects(t.replay()); // the send fails: the files stay in the spool
    assert.deepEqual(fs.readdirSync(dir).sort(), [
      "000000000000001-1-a.spool", "000000000000002-1-b.spool", names.live,
    ]);
    assert.equal(t.stats.replayed, 0);
    await t.close(100);
  } finally {
    await other.close(100);
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
