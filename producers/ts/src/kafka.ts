/**
 * The Kafka transport: kafkajs, idempotent with acks=all, a CRC32 partitioner (librdkafka's
 * consistent_random, docs/wire.md), records batched for `lingerMs` and compressed (gzip by
 * default), and a durable spool for what Kafka did not take, replayed on a timer, on
 * `replay()` and by the next process that uses the same spool folder. Sends are in order
 * (one request in flight), so a request's end follows its usage events on their partition.
 */
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import {
  CompressionCodecs, CompressionTypes, Kafka, logLevel,
  type Message, type Producer, type ICustomPartitioner,
} from "kafkajs";
import { ConfigError, DeliveryError } from "./errors";
import type { Transport } from "./meter";
import { KafkaSecurity, type KafkaSecurityOptions } from "./security";
import { crc32, partitionFor } from "./wire";

/** crc32(key) mod partition count, as librdkafka's consistent_random for a non-empty key. */
export const crc32Partitioner: ICustomPartitioner = () => ({ partitionMetadata, message }) => {
  const key = message.key;
  if (key === null || key === undefined) throw new DeliveryError("nodemeter records always have a key");
  const bytes = typeof key === "string" ? Buffer.from(key, "utf8") : key;
  return partitionFor(bytes, partitionMetadata.length);
};

/** Batch compression. kafkajs ships gzip; the others need a codec registered on its CompressionCodecs. */
export type Compression = "none" | "gzip" | "snappy" | "lz4" | "zstd";
const COMPRESSION_TYPES: Record<Compression, CompressionTypes> = {
  none: CompressionTypes.None, gzip: CompressionTypes.GZIP, snappy: CompressionTypes.Snappy,
  lz4: CompressionTypes.LZ4, zstd: CompressionTypes.ZSTD,
};

function compressionType(name: Compression): CompressionTypes {
  const type = COMPRESSION_TYPES[name];
  if (type === undefined) {
    throw new ConfigError(`compression must be one of ${Object.keys(COMPRESSION_TYPES).join(", ")}`);
  }
  if (type !== CompressionTypes.None) {
    try {
      (CompressionCodecs as Record<number, () => unknown>)[type]!();
    } catch (err) {
      throw new ConfigError(`compression ${name}: kafkajs has no codec for it (register one on kafkajs' ` +
        `CompressionCodecs[CompressionTypes.${CompressionTypes[type]}] first, e.g. from kafkajs-lz4 or ` +
        `@kafkajs/zstd; gzip is built in): ${String(err)}`);
    }
  }
  return type;
}

export interface KafkaTransportOptions {
  /** Default NODEMETER_KAFKA_BOOTSTRAP, else 127.0.0.1:19092 (comma-separated). */
  brokers?: string[];
  /**
   * TLS and SASL; default: from the environment (NODEMETER_KAFKA_SECURITY_PROTOCOL and the
   * rest, over the file NODEMETER_KAFKA_CONFIG names). Given here, the environment is not read.
   */
  security?: KafkaSecurity | KafkaSecurityOptions;
  clientId?: string;
  lingerMs?: number;
  /** Records per produce request; default 10000. */
  maxBatch?: number;
  /**
   * Uncompressed bytes per produce request (keys, values and 40 bytes of framing a record);
   * default 900000, under the broker's default max.message.bytes (1 MiB) for a batch that
   * lands on one partition, compressed or not.
   */
  maxBatchBytes?: number;
  /** Batch compression; default "gzip" (kafkajs' built-in codec; the Python SDK uses lz4). */
  compression?: Compression;
  /** Records Kafka did not take go here; null: none (they are counted as failed). */
  spoolDir?: string | null;
  /** How often a non-empty spool is replayed while the process runs; default 5000 ms. */
  replayIntervalMs?: number;
  /**
   * How long one produce request, kafkajs' retries included, may take before its records
   * are spooled; default 30000. One given up on may still have been written: its records
   * are then replayed too (the same bytes; the worker's dedupe drops the copy).
   */
  deliveryTimeoutMs?: number;
}

interface Pending {
  topic: string;
  key: Buffer;
  value: Buffer;
}

export interface TransportStats {
  produced: number;
  delivered: number;
  spooled: number;
  replayed: number;
  failed: number;
  /** Spool lines skipped on replay: a checksum that does not match, or not a record at all. */
  damaged: number;
  /** Spool files kept under `quarantine/` for inspection (damaged lines, or unreadable). */
  quarantined: number;
}

export function defaultSpoolDir(): string {
  // its own folder: the Python SDK's spool files have another format
  const base = process.env.NODEMETER_SPOOL_DIR;
  return base ? path.join(base, "ts") : path.join(os.homedir(), ".local", "state", "nodemeter", "spool-ts");
}

const SPOOL = ".spool";
const RECORD_OVERHEAD = 40; // a record's framing in a v2 record batch, generously
const MAX_WARNINGS = 10; // damaged lines named one by one a file, then a count

const QUARANTINE = "quarantine";

/**
 * One JSON line a record: `{"t":topic,"k":key,"v":value,"c":crc}`, key and value in base64,
 * `c` the CRC-32 (zlib's) of the line's UTF-8 bytes without its `,"c":crc` member, that is
 * of `{"t":...,"k":...,"v":...}` exactly as written. Still JSON, so any reader takes it.
 */
function spoolLines(batch: Pending[]): string {
  return batch.map((p) => {
    const body = JSON.stringify({ t: p.topic, k: p.key.toString("base64"), v: p.value.toString("base64") });
    return `${body.slice(0, -1)},"c":${crc32(Buffer.from(body, "utf8"))}}\n`;
  }).join("");
}

const CHECKSUM = /,"c":(\d{1,10})\}$/; // the last member, ASCII: its bytes are its characters
const BRACE = Buffer.from("}");

/** `s` exactly as Buffer.toString("base64") writes it (Buffer.from skips what is not base64). */
function base64(s: unknown): Buffer | null {
  if (typeof s !== "string") return null;
  const b = Buffer.from(s, "base64");
  return b.toString("base64") === s ? b : null;
}

/** A parsed line's record: exactly the members t (a topic), k and v (base64); else null. */
function record(r: unknown): Pending | null {
  if (typeof r !== "object" || r === null || Array.isArray(r)) return null;
  const o = r as Record<string, unknown>;
  if (Object.keys(o).length !== 3 || typeof o.t !== "string" || o.t === "") return null;
  const key = base64(o.k);
  const value = base64(o.v);
  return key && value ? { topic: o.t, key, value } : null;
}

type SpoolLine = { line: number; rec: Pending; checked: boolean } | { line: number; why: string };

function spoolLine(raw: Buffer, line: number): SpoolLine {
  const text = raw.toString("utf8");
  const m = CHECKSUM.exec(text);
  let body = text;
  if (m) {
    const bytes = Buffer.concat([raw.subarray(0, raw.length - m[0].length), BRACE]);
    if (crc32(bytes) !== Number(m[1])) return { line, why: "checksum mismatch" };
    body = bytes.toString("utf8");
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(body);
  } catch {
    return { line, why: "not JSON" };
  }
  const rec = record(parsed);
  return rec ? { line, rec, checked: m !== null } : { line, why: "not a spool record" };
}

/**
 * The records of a spool file, and its damaged lines (1-based). Lines without a checksum
 * are the format before checksums (replayed as they parse); in a file where any line
 * verifies, one without is damage too: the writer gives every line one.
 */
function readSpool(data: Buffer): { records: Pending[]; damaged: Array<{ line: number; why: string }> } {
  const lines: SpoolLine[] = [];
  let start = 0;
  for (let n = 1; start < data.length; n++) {
    let end = data.indexOf(0x0a, start);
    if (end < 0) end = data.length; // a last line without its newline: a truncated file
    if (end > start) lines.push(spoolLine(data.subarray(start, end), n));
    start = end + 1;
  }
  const checked = lines.some((l) => "rec" in l && l.checked);
  const records: Pending[] = [];
  const damaged: Array<{ line: number; why: string }> = [];
  for (const l of lines) {
    if (!("rec" in l)) damaged.push(l);
    else if (checked && !l.checked) damaged.push({ line: l.line, why: "no checksum in a file with checksums" });
    else records.push(l.rec);
  }
  return { records, damaged };
}

/** Write `data` to `file` durably: a temporary file, fsynced, renamed into place, folder fsynced. */
function writeDurably(file: string, data: string | Buffer): void {
  const fd = fs.openSync(file + ".tmp", "w", 0o600);
  try {
    const bytes = typeof data === "string" ? Buffer.from(data, "utf8") : data;
    for (let done = 0; done < bytes.length;) done += fs.writeSync(fd, bytes, done);
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
  fs.renameSync(file + ".tmp", file);
  fsyncDir(path.dirname(file)); // the rename itself survives a power cut
}
// <name>.spool.<pid>-<token>.replaying: claimed by the transport <token> of process <pid>
const REPLAYING = /^(.*\.spool)\.(\d+)(?:-([a-z0-9]+))?\.replaying$/;

/** Tokens of this process's transports that are not closed. */
const LIVE_TOKENS = new Set<string>();

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
}

function fsyncDir(dir: string): void {
  const fd = fs.openSync(dir, "r");
  try {
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}

export class KafkaTransport implements Transport {
  readonly stats: TransportStats = {
    produced: 0, delivered: 0, spooled: 0, replayed: 0, failed: 0, damaged: 0, quarantined: 0,
  };
  private readonly kafka: Kafka;
  /** How this transport connects (validated; its passwords never shown). */
  readonly security: KafkaSecurity;
  readonly brokers: ReadonlyArray<string>;
  private readonly deliveryTimeoutMs: number;
  private producer: Producer;
  private readonly lingerMs: number;
  private readonly maxBatch: number;
  private readonly maxBatchBytes: number;
  private readonly compression: CompressionTypes;
  private readonly spoolDir: string | null;
  private queue: Pending[] = [];
  private timer: NodeJS.Timeout | null = null;
  private replayTimer: NodeJS.Timeout | null = null;
  private replayWanted: boolean;
  private replayError: unknown;
  private loop: Promise<void> | null = null;
  private connected: Promise<void> | null = null;
  private lastError: unknown;
  /** Names this transport's spool claims: a pid alone is no identity (pid 1 in every container run). */
  private readonly token = Math.random().toString(36).slice(2, 12);

  constructor(options: KafkaTransportOptions = {}) {
    const brokers = (options.brokers ?? (process.env.NODEMETER_KAFKA_BOOTSTRAP ?? "127.0.0.1:19092").split(","))
      .map((b) => b.trim()).filter((b) => b !== "");
    if (brokers.length === 0) {
      throw new ConfigError(options.brokers ? "brokers is empty" :
        "NODEMETER_KAFKA_BOOTSTRAP is empty; give host:port[,host:port...]",
      options.brokers ? "brokers" : "NODEMETER_KAFKA_BOOTSTRAP");
    }
    this.brokers = brokers;
    this.security = options.security === undefined ? KafkaSecurity.fromEnv() : KafkaSecurity.from(options.security);
    this.kafka = new Kafka({
      clientId: options.clientId ?? "nodemeter-sdk-ts", brokers, logLevel: logLevel.NOTHING,
      ...this.security.kafkajs(),
      retry: { maxRetryTime: 2_000, initialRetryTime: 100, retries: 5 },
    });
    LIVE_TOKENS.add(this.token);
    this.deliveryTimeoutMs = options.deliveryTimeoutMs ?? 30_000;
    if (!(this.deliveryTimeoutMs >= 100)) throw new ConfigError("deliveryTimeoutMs must be >= 100");
    this.producer = this.newProducer();
    this.lingerMs = options.lingerMs ?? 5;
    this.maxBatch = options.maxBatch ?? 10_000;
    this.maxBatchBytes = options.maxBatchBytes ?? 900_000;
    if (!(this.maxBatch >= 1)) throw new ConfigError("maxBatch must be >= 1");
    if (!(this.maxBatchBytes >= 1)) throw new ConfigError("maxBatchBytes must be >= 1");
    this.compression = compressionType(options.compression ?? "gzip");
    this.spoolDir = options.spoolDir === undefined ? defaultSpoolDir() : options.spoolDir;
    const every = options.replayIntervalMs ?? 5_000;
    if (!(every >= 50 && every <= 3_600_000)) throw new ConfigError("replayIntervalMs must be 50..3600000");
    // what an earlier run left in the spool goes out with the first send, or on the timer
    this.replayWanted = this.spoolDir !== null;
    if (this.spoolDir !== null) {
      this.replayTimer = setInterval(() => {
        if (this.spooledFiles() > 0) {
          this.replayWanted = true;
          void this.drain();
        }
      }, every);
      this.replayTimer.unref(); // never keeps the process alive
    }
  }

  private newProducer(): Producer {
    return this.kafka.producer({
      idempotent: true, maxInFlightRequests: 1, createPartitioner: crc32Partitioner,
      allowAutoTopicCreation: false,
    });
  }

  send(topic: string, key: Buffer, value: Buffer): void {
    this.queue.push({ topic, key, value });
    this.stats.produced++;
    if (this.timer === null && this.loop === null) {
      this.timer = setTimeout(() => void this.drain(), this.lingerMs);
    }
  }

  private connect(): Promise<void> {
    if (this.connected === null) {
      const producer = this.producer;
      const attempt: Promise<void> = producer.connect().then(() => {
        if (this.producer === producer) this.replayWanted = this.spoolDir !== null;
      }, (err: unknown) => {
        // a connect given up on (its producer replaced) must not clear the new one's
        if (this.connected === attempt) this.connected = null;
        throw err;
      });
      this.connected = attempt;
    }
    return this.connected;
  }

  /**
   * After a failed send, a fresh producer (a new producer id): with the old one, a batch
   * the broker wrote although its ack was lost would share sequence numbers with the next
   * batch, which the broker would then drop as a duplicate.
   */
  private async resetProducer(wait = true): Promise<void> {
    const old = this.producer;
    this.producer = this.newProducer();
    this.connected = null;
    const closed = old.disconnect().catch(() => undefined);
    if (wait) await closed; // not for a connect given up on: kafkajs waits it out first
  }

  /** How many of `records`, from `start` on, go into one produce request: at least one. */
  private batchLength(records: ReadonlyArray<Pending>, start = 0): number {
    let bytes = 0;
    const most = Math.min(records.length - start, this.maxBatch);
    for (let i = 0; i < most; i++) {
      const r = records[start + i]!;
      bytes += r.key.length + r.value.length + RECORD_OVERHEAD;
      if (bytes > this.maxBatchBytes) return Math.max(i, 1);
    }
    return most;
  }

  private async sendBatch(batch: Pending[]): Promise<void> {
    const byTopic = new Map<string, Message[]>();
    for (const p of batch) {
      let msgs = byTopic.get(p.topic);
      if (!msgs) byTopic.set(p.topic, (msgs = []));
      msgs.push({ key: p.key, value: p.value });
    }
    // One deadline for the connect and the send: a broker that accepts connections and
    // never answers would otherwise hold the batch for kafkajs' own timeouts (30 s).
    let stage = "connected";
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new DeliveryError(
        `not ${stage} within deliveryTimeoutMs (${this.deliveryTimeoutMs} ms)`)), this.deliveryTimeoutMs);
    });
    try {
      try {
        await Promise.race([this.connect(), late]);
      } catch (err) {
        if (err instanceof DeliveryError) await this.resetProducer(false); // the deadline: drop that connect
        throw this.security.explain(err, this.brokers) ?? err; // a refused login or handshake, named
      }
      stage = "acknowledged";
      const sent = this.producer.sendBatch({
        acks: -1, compression: this.compression,
        topicMessages: [...byTopic.entries()].map(([topic, messages]) => ({ topic, messages })),
      });
      sent.catch(() => undefined); // a send given up on below may still fail later
      try {
        await Promise.race([sent, late]);
      } catch (err) {
        await this.resetProducer(); // disconnects the old producer: a send still under way ends
        throw this.security.explain(err, this.brokers) ?? err;
      }
    } finally {
      clearTimeout(timer);
    }
  }

  private drain(): Promise<void> {
    if (this.timer !== null) {
      clearTimeout(this.timer);
      this.timer = null;
    }
    this.loop ??= (async () => {
      try {
        while (this.queue.length > 0 || this.replayWanted) {
          if (this.replayWanted) {
            this.replayWanted = false;
            try {
              await this.replaySpool();
              this.replayError = undefined;
            } catch (err) {
              this.replayError = err; // left in the spool: the timer tries again
            }
            continue;
          }
          const batch = this.queue.splice(0, this.batchLength(this.queue));
          try {
            await this.sendBatch(batch);
            this.stats.delivered += batch.length;
          } catch (err) {
            this.lastError = err;
            this.toSpool(batch, err);
          }
        }
      } finally {
        this.loop = null;
      }
    })();
    return this.loop;
  }

  private toSpool(batch: Pending[], cause: unknown): void {
    if (this.spoolDir === null) {
      this.stats.failed += batch.length;
      console.error(`nodemeter: ${batch.length} record(s) not delivered and no spool:`, cause);
      return;
    }
    try {
      fs.mkdirSync(this.spoolDir, { recursive: true, mode: 0o700 });
      const file = path.join(this.spoolDir,
        `${Date.now().toString().padStart(15, "0")}-${process.pid}-${Math.random().toString(36).slice(2)}${SPOOL}`);
      writeDurably(file, spoolLines(batch));
      this.stats.spooled += batch.length;
    } catch (err) {
      this.stats.failed += batch.length;
      console.error(`nodemeter: ${batch.length} record(s) neither delivered nor spooled:`, err);
    }
  }

  /** Spool files waiting for replay (a crashed process's claimed ones included). */
  spooledFiles(): number {
    const dir = this.spoolDir;
    if (dir === null || !fs.existsSync(dir)) return 0;
    return fs.readdirSync(dir).filter((n) => n.endsWith(SPOOL) || REPLAYING.test(n)).length;
  }

  /**
   * Send what the spool holds now, in the order it was written (same bytes: the worker
   * drops what already arrived); resolves to the number of records sent, rejects (files
   * kept) when Kafka does not take them. Runs in turn with the sends of new records.
   */
  async replay(): Promise<number> {
    while (this.loop !== null) await this.loop;
    const before = this.stats.replayed;
    this.replayWanted = false;
    this.loop = this.replaySpool().finally(() => {
      this.loop = null;
    });
    try {
      await this.loop;
    } finally {
      if (this.queue.length > 0) void this.drain();
    }
    return this.stats.replayed - before;
  }

  private async replaySpool(): Promise<void> {
    const dir = this.spoolDir;
    if (dir === null || !fs.existsSync(dir)) return;
    for (const name of fs.readdirSync(dir)) { // claimed by a process that died: take it back
      const m = REPLAYING.exec(name);
      const pid = m ? Number(m[2]) : 0;
      // this pid under a token no transport here has: an earlier run (a container restarted
      // as pid 1 again); another pid: dead once it no longer runs
      if (m && (pid === process.pid ? !LIVE_TOKENS.has(m[3] ?? "") : !alive(pid))) {
        try {
          fs.renameSync(path.join(dir, name), path.join(dir, m[1]!));
        } catch {
          // another process took it back first
        }
      }
    }
    for (const name of fs.readdirSync(dir).filter((n) => n.endsWith(SPOOL)).sort()) {
      const file = path.join(dir, name);
      const claimed = `${file}.${process.pid}-${this.token}.replaying`;
      try {
        fs.renameSync(file, claimed); // another process may have taken it
      } catch {
        continue;
      }
      const q = path.join(dir, QUARANTINE);
      const kept = path.join(q, name + ".damaged");
      let data: Buffer;
      try {
        data = fs.readFileSync(claimed);
      } catch (err) { // an I/O error: nothing of it can be read
        fs.mkdirSync(q, { recursive: true, mode: 0o700 });
        fs.renameSync(claimed, kept);
        this.stats.quarantined++;
        console.error(`nodemeter: spool file ${name} unreadable, moved to ${q}:`, err);
        continue;
      }
      // written whole and renamed into place, so only outside damage (a disk, an edit) gets here
      const { records: batch, damaged } = readSpool(data);
      if (damaged.length > 0) {
        // the file as found goes to quarantine first, then the claim keeps only the intact
        // records: a crash in between replays (and quarantines) it again, never loses any
        try {
          fs.mkdirSync(q, { recursive: true, mode: 0o700 });
          writeDurably(kept, data);
          if (batch.length > 0) writeDurably(claimed, spoolLines(batch));
          else fs.unlinkSync(claimed);
        } catch (err) { // a full disk, say: the file waits as it was, for the next replay
          fs.renameSync(claimed, file);
          throw err;
        }
        this.stats.damaged += damaged.length;
        this.stats.quarantined++;
        for (const d of damaged.slice(0, MAX_WARNINGS)) {
          console.error(`nodemeter: spool file ${name} line ${d.line} damaged (${d.why}): skipped; ` +
            `the file is kept as ${kept}`);
        }
        if (damaged.length > MAX_WARNINGS) {
          console.error(`nodemeter: spool file ${name}: ${damaged.length - MAX_WARNINGS} more damaged line(s) ` +
            `skipped (${damaged.length} in all, ${batch.length} intact record(s) replayed)`);
        }
        if (batch.length === 0) continue;
      }
      let done = 0;
      try {
        while (done < batch.length) {
          const n = this.batchLength(batch, done);
          await this.sendBatch(batch.slice(done, done + n));
          done += n;
          this.stats.replayed += n;
        }
      } catch (err) {
        if (done > 0) writeDurably(claimed, spoolLines(batch.slice(done))); // what was sent leaves the file
        fs.renameSync(claimed, file);
        throw err;
      }
      fs.unlinkSync(claimed);
    }
  }

  async flush(timeoutMs: number): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new DeliveryError(`flush: not done after ${timeoutMs} ms`)), timeoutMs);
    });
    try {
      await Promise.race([(async () => {
        while (this.queue.length > 0 || this.loop !== null) await (this.loop ?? this.drain());
      })(), timeout]);
    } finally {
      clearTimeout(timer);
    }
  }

  async close(timeoutMs: number): Promise<void> {
    if (this.replayTimer !== null) clearInterval(this.replayTimer);
    this.replayTimer = null;
    try {
      await this.flush(timeoutMs);
    } finally {
      LIVE_TOKENS.delete(this.token);
      if (this.connected !== null) await this.producer.disconnect();
    }
  }

  /** The last delivery error (records then went to the spool). */
  get error(): unknown {
    return this.lastError;
  }

  /** Why the last replay left records in the spool (undefined after one that emptied it). */
  get replayFailure(): unknown {
    return this.replayError;
  }
}
