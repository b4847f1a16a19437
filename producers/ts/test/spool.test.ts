import { test } from "node:test";
import * as assert from "node:assert/strict";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { KafkaTransport } from "../src/index";
import { crc32 } from "../src/wire";

// The spool's per-record checksums, without a broker: sendBatch is replaced by one that
// records what it is given (tests/integration/test_ts_sdk.py replays damaged files into
// the real broker).

interface Rec { topic: string; key: Buffer; value: Buffer }

const recs = (n: number): Rec[] => Array.from({ length: n }, (_, i) => ({
  topic: "nodemeter.usage.v1", key: Buffer.from(`acme/req-${i}`), value: Buffer.from(`\u00c3\u0001value-${i}-${"x".repeat(40)}`, "latin1"),
}));

interface Harness {
  dir: string;
  t: KafkaTransport;
  sent: Rec[];
  warnings: string[];
  /** Spool files waiting, and what quarantine/ holds. */
  waiting(): string[];
  quarantined(): string[];
  done(): Promise<void>;
}

function harness(options: { maxBatch?: number; failAfter?: number } = {}): Harness {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "nm-spool-crc-"));
  const t = new KafkaTransport({ spoolDir: dir, brokers: ["127.0.0.1:1"], maxBatch: options.maxBatch });
  const sent: Rec[] = [];
  let calls = 0;
  (t as unknown as { sendBatch(b: Rec[]): Promise<void> }).sendBatch = async (batch) => {
    if (options.failAfter !== undefined && calls >= options.failAfter) throw new Error("broker down");
    calls++;
    sent.push(...batch);
  };
  const warnings: string[] = [];
  const error = console.error;
  console.error = (...args: unknown[]) => void warnings.push(args.map(String).join(" "));
  return {
    dir, t, sent, warnings,
    waiting: () => fs.readdirSync(dir).filter((n) => n !== "quarantine").sort(),
    quarantined: () => (fs.existsSync(path.join(dir, "quarantine")) ? fs.readdirSync(path.join(dir, "quarantine")).sort() : []),
    done: async () => {
      console.error = error;
      await t.close(100);
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Spool `batch` the way a failed send does; returns the file's path. */
function spool(h: Harness, batch: Rec[]): string {
  const before = new Set(fs.readdirSync(h.dir));
  (h.t as unknown as { toSpool(b: Rec[], cause: unknown): void }).toSpool(batch, new Error("down"));
  const added = fs.readdirSync(h.dir).filter((n) => !before.has(n));
  assert.equal(added.length, 1);
  return path.join(h.dir, added[0]!);
}

const plain = (r: Rec) => ({ topic: r.topic, key: r.key.toString("hex"), value: r.value.toString("hex") });
const same = (got: Rec[], want: Rec[]) => assert.deepEqual(got.map(plain), want.map(plain));

test("each spool line is JSON with a CRC-32 of the line without its c member", async () => {
  const h = harness();
  try {
    const file = spool(h, recs(3));
    const lines = fs.readFileSync(file, "utf8").split("\n");
    assert.equal(lines.pop(), ""); // every line ends with a newline
    assert.equal(lines.length, 3);
    lines.forEach((line, i) => {
      const r = JSON.parse(line) as { t: string; k: string; v: string; c: number };
      assert.deepEqual(Object.keys(r), ["t", "k", "v", "c"]);
      assert.equal(r.t, "nodemeter.usage.v1");
      assert.equal(Buffer.from(r.k, "base64").toString(), `acme/req-${i}`);
      const body = JSON.stringify({ t: r.t, k: r.k, v: r.v });
      assert.equal(line, `${body.slice(0, -1)},"c":${r.c}}`);
      assert.equal(r.c, crc32(Buffer.from(body)));
    });
    assert.equal(await h.t.replay(), 3);
    same(h.sent, recs(3));
    assert.deepEqual([h.waiting(), h.quarantined(), h.t.stats.damaged, h.warnings], [[], [], 0, []]);
  } finally {
    await h.done();
  }
});

test("a flipped byte mid-file: the records before and after it are replayed, the damaged one quarantined", async () => {
  const h = harness();
  try {
    const want = recs(5);
    const file = spool(h, want);
    const name = path.basename(file);
    const data = fs.readFileSync(file);
    // a byte inside the third record's value (base64 still, so the line is still JSON)
    const third = data.indexOf(Buffer.from(want[2]!.value.toString("base64").slice(0, 12)));
    assert.ok(third > data.length / 3 && third < (2 * data.length) / 3, "the damage is mid-file");
    const at = third + 5;
    data[at] = data[at] === 0x41 ? 0x42 : 0x41;
    fs.writeFileSync(file, data);
    const damaged = Buffer.from(data); // as found on disk

    assert.equal(await h.t.replay(), 4);
    same(h.sent, [want[0]!, want[1]!, want[3]!, want[4]!]);
    assert.equal(h.t.stats.damaged, 1);
    assert.equal(h.t.stats.quarantined, 1);
    assert.equal(h.t.stats.replayed, 4);
    assert.deepEqual(h.waiting(), []); // the intact records went: nothing waits
    assert.deepEqual(h.quarantined(), [`${name}.damaged`]);
    assert.deepEqual(fs.readFileSync(path.join(h.dir, "quarantine", `${name}.damaged`)), damaged); // kept byte for byte
    assert.equal(h.warnings.length, 1, h.warnings.join("\n"));
    assert.match(h.warnings[0]!, new RegExp(`spool file ${name.replace(/\./g, "\\.")} line 3 damaged \\(checksum mismatch\\)`));
    assert.equal(await h.t.replay(), 0); // the quarantine is not replayed
  } finally {
    await h.done();
  }
});

test("a byte that breaks a line's JSON costs that line only", async () => {
  const h = harness();
  try {
    const want = recs(3);
    const file = spool(h, want);
    const text = fs.readFileSync(file, "latin1");
    const second = text.indexOf("\n") + 1;
    fs.writeFileSync(file, Buffer.from(text.slice(0, second + 2) + "\n" + text.slice(second + 3), "latin1")); // a newline in it
    assert.equal(await h.t.replay(), 2);
    same(h.sent, [want[0]!, want[2]!]);
    assert.equal(h.t.stats.damaged, 2); // the line is now two, neither a record
    assert.ok(h.warnings.some((w) => w.includes("line 2 damaged")) && h.warnings.some((w) => w.includes("line 3 damaged")), h.warnings.join("\n"));
    assert.equal(h.quarantined().length, 1);
  } finally {
    await h.done();
  }
});

test("a truncated last line is skipped and counted; the lines before it are replayed", async () => {
  const h = harness();
  try {
    const want = recs(4);
    const file = spool(h, want);
    const data = fs.readFileSync(file);
    fs.writeFileSync(file, data.subarray(0, data.length - 20)); // cut inside the last line
    assert.equal(await h.t.replay(), 3);
    same(h.sent, want.slice(0, 3));
    assert.equal(h.t.stats.damaged, 1);
    assert.match(h.warnings.join("\n"), /line 4 damaged/);
    assert.deepEqual(h.quarantined(), [`${path.basename(file)}.damaged`]);
    assert.deepEqual(h.waiting(), []);
  } finally {
    await h.done();
  }
});

test("a file of the format before checksums still replays, every record", async () => {
  const h = harness();
  try {
    const want = recs(3);
    const name = "000000000000001-1-old.spool";
    fs.writeFileSync(path.join(h.dir, name), want.map((p) => // as spoolLines wrote it before
      JSON.stringify({ t: p.topic, k: p.key.toString("base64"), v: p.value.toString("base64") }) + "\n").join(""));
    assert.equal(await h.t.replay(), 3);
    same(h.sent, want);
    assert.deepEqual([h.waiting(), h.quarantined(), h.t.stats.damaged, h.warnings], [[], [], 0, []]);
  } finally {
    await h.done();
  }
});

test("an old-format file with a line that does not parse: the others are replayed, not the whole file quarantined", async () => {
  const h = harness();
  try {
    const want = recs(3);
    const lines = want.map((p) => JSON.stringify({ t: p.topic, k: p.key.toString("base64"), v: p.value.toString("base64") }));
    lines[1] = lines[1]!.slice(0, 10) + "\u0000" + lines[1]!.slice(11);
    fs.writeFileSync(path.join(h.dir, "000000000000001-1-old.spool"), lines.join("\n") + "\n");
    assert.equal(await h.t.replay(), 2);
    same(h.sent, [want[0]!, want[2]!]);
    assert.equal(h.t.stats.damaged, 1);
    assert.deepEqual(h.quarantined(), ["000000000000001-1-old.spool.damaged"]);
  } finally {
    await h.done();
  }
});

test("in a file with checksums a line without one is damage, as is one with a mangled member", async () => {
  const h = harness();
  try {
    const want = recs(3);
    const file = spool(h, want);
    const lines = fs.readFileSync(file, "utf8").split("\n");
    lines[0] = lines[0]!.replace(/,"c":\d+\}$/, "}"); // the member gone whole
    lines[2] = lines[2]!.replace(',"c":', ',"d":'); // the member's name hit
    fs.writeFileSync(file, lines.join("\n"));
    assert.equal(await h.t.replay(), 1);
    same(h.sent, [want[1]!]);
    assert.equal(h.t.stats.damaged, 2);
    assert.match(h.warnings.join("\n"), /line 1 damaged \(no checksum in a file with checksums\)/);
    assert.match(h.warnings.join("\n"), /line 3 damaged \(not a spool record\)/);
  } finally {
    await h.done();
  }
});

test("a file with nothing intact leaves the spool for quarantine, nothing sent", async () => {
  const h = harness();
  try {
    fs.writeFileSync(path.join(h.dir, "000000000000001-1-junk.spool"), "garbage\n{\"t\":1}\n");
    assert.equal(await h.t.replay(), 0);
    assert.deepEqual([h.sent.length, h.waiting(), h.quarantined(), h.t.stats.damaged],
      [0, [], ["000000000000001-1-junk.spool.damaged"], 2]);
  } finally {
    await h.done();
  }
});

test("a send failing after the damage was found: the file waits with only its intact records", async () => {
  const h = harness({ maxBatch: 1, failAfter: 1 });
  try {
    const want = recs(4);
    const file = spool(h, want);
    const data = fs.readFileSync(file);
    const second = data.indexOf(0x0a) + 30;
    data[second] = data[second]! ^ 0x01;
    fs.writeFileSync(file, data);
    await assert.rejects(h.t.replay(), /broker down/);
    same(h.sent, [want[0]!]);
    assert.equal(h.t.stats.damaged, 1);
    assert.deepEqual(h.waiting(), [path.basename(file)]); // claim given back, under its name
    assert.equal(h.quarantined().length, 1);
    const left = fs.readFileSync(file, "utf8").trimEnd().split("\n").map((l) => JSON.parse(l) as { k: string });
    assert.deepEqual(left.map((r) => Buffer.from(r.k, "base64").toString()), ["acme/req-2", "acme/req-3"]);
    // the next replay sends the rest, and finds no damage again
    (h.t as unknown as { sendBatch(b: Rec[]): Promise<void> }).sendBatch = async (batch) => void h.sent.push(...batch);
    assert.equal(await h.t.replay(), 2);
    same(h.sent, [want[0]!, want[2]!, want[3]!]);
    assert.deepEqual([h.t.stats.damaged, h.t.stats.quarantined, h.waiting()], [1, 1, []]);
  } finally {
    await h.done();
  }
});

test("damage found but quarantine/ cannot be written: the file waits as it was, claim given back", async () => {
  const h = harness();
  try {
    const file = spool(h, recs(3));
    const data = fs.readFileSync(file);
    fs.writeFileSync(file, data.subarray(0, data.length - 5));
    fs.writeFileSync(path.join(h.dir, "quarantine"), "not a folder");
    await assert.rejects(h.t.replay());
    assert.deepEqual([h.sent.length, h.t.stats.damaged], [0, 0]);
    assert.deepEqual(fs.readdirSync(h.dir).sort(), [path.basename(file), "quarantine"]);
    assert.deepEqual(fs.readFileSync(file), data.subarray(0, data.length - 5));
  } finally {
    await h.done();
  }
});
