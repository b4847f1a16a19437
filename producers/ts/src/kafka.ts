/**
 * The Kafka transport: kafkajs, idempotent with acks=all, a CRC32 partitioner (librdkafka's
 * consistent_random, docs/wire.md), records batched for `lingerMs`, and a durable spool for
 * what Kafka did not take. Sends are in order (one request in flight), so a request's end
 * follows its usage events on their partition.
 */
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { Kafka, logLevel, type Message, type Producer, type ICustomPartitioner } from "kafkajs";
import { DeliveryError } from "./errors";
import type { Transport } from "./meter";
import { partitionFor } from "./wire";

/** crc32(key) mod partition count, as librdkafka's consistent_random for a non-empty key. */
export const crc32Partitioner: ICustomPartitioner = () => ({ partitionMetadata, message }) => {
  const key = message.key;
  if (key === null || key === undefined) throw new DeliveryError("nodemeter records always have a key");
  const bytes = typeof key === "string" ? Buffer.from(key, "utf8") : key;
  return partitionFor(bytes, partitionMetadata.length);
};

export interface KafkaTransportOptions {
  /** Default NODEMETER_KAFKA_BOOTSTRAP, else 127.0.0.1:19092 (comma-separated). */
  brokers?: string[];
  clientId?: string;
  lingerMs?: number;
  maxBatch?: number;
  /** Records Kafka did not take go here; null: none (they are counted as failed). */
  spoolDir?: string | null;
  /** How long one send may retry before its records are spooled. */
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
}

export function defaultSpoolDir(): string {
  // its own folder: the Python SDK's spool files have another format
  const base = process.env.NODEMETER_SPOOL_DIR;
  return base ? path.join(base, "ts") : path.join(os.homedir(), ".local", "state", "nodemeter", "spool-ts");
}

export class KafkaTransport implements Transport {
  readonly stats: TransportStats = { produced: 0, delivered: 0, spooled: 0, replayed: 0, failed: 0 };
  private readonly producer: Producer;
  private readonly lingerMs: number;
  private readonly maxBatch: number;
  private readonly spoolDir: string | null;
  private queue: Pending[] = [];
  private timer: NodeJS.Timeout | null = null;
  private loop: Promise<void> | null = null;
  private connected: Promise<void> | null = null;
  private lastError: unknown;

  constructor(options: KafkaTransportOptions = {}) {
    const brokers = options.brokers ?? (process.env.NODEMETER_KAFKA_BOOTSTRAP ?? "127.0.0.1:19092").split(",");
    const kafka = new Kafka({
      clientId: options.clientId ?? "nodemeter-sdk-ts", brokers, logLevel: logLevel.NOTHING,
      retry: { maxRetryTime: 2_000, initialRetryTime: 100, retries: 5 },
    });
    this.producer = kafka.producer({
      idempotent: true, maxInFlightRequests: 1, createPartitioner: crc32Partitioner,
      allowAutoTopicCreation: false,
      transactionTimeout: options.deliveryTimeoutMs ?? 30_000,
    });
    this.lingerMs = options.lingerMs ?? 5;
    this.maxBatch = options.maxBatch ?? 10_000;
    this.spoolDir = options.spoolDir === undefined ? defaultSpoolDir() : options.spoolDir;
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
      this.connected = this.producer.connect().then(async () => {
        await this.replay();
      }, (err: unknown) => {
        this.connected = null;
        throw err;
      });
    }
    return this.connected;
  }

  private async sendBatch(batch: Pending[]): Promise<void> {
    const byTopic = new Map<string, Message[]>();
    for (const p of batch) {
      let msgs = byTopic.get(p.topic);
      if (!msgs) byTopic.set(p.topic, (msgs = []));
      msgs.push({ key: p.key, value: p.value });
    }
    await this.producer.sendBatch({
      acks: -1, topicMessages: [...byTopic.entries()].map(([topic, messages]) => ({ topic, messages })),
    });
  }

  private drain(): Promise<void> {
    if (this.timer !== null) {
      clearTimeout(this.timer);
      this.timer = null;
    }
    this.loop ??= (async () => {
      try {
        while (this.queue.length > 0) {
          const batch = this.queue.splice(0, this.maxBatch);
          try {
            await this.connect();
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
      fs.mkdirSync(this.spoolDir, { recursive: true });
      const file = path.join(this.spoolDir, `${process.pid}-${Date.now()}-${Math.random().toString(36).slice(2)}.spool`);
      const lines = batch.map((p) => JSON.stringify({ t: p.topic, k: p.key.toString("base64"), v: p.value.toString("base64") }));
      const fd = fs.openSync(file + ".tmp", "w");
      try {
        fs.writeSync(fd, lines.join("\n") + "\n");
        fs.fsyncSync(fd);
      } finally {
        fs.closeSync(fd);
      }
      fs.renameSync(file + ".tmp", file);
      this.stats.spooled += batch.length;
    } catch (err) {
      this.stats.failed += batch.length;
      console.error(`nodemeter: ${batch.length} record(s) neither delivered nor spooled:`, err);
    }
  }

  /** Send what the spool holds (same bytes: the worker drops what already arrived). */
  async replay(): Promise<number> {
    const dir = this.spoolDir;
    if (dir === null || !fs.existsSync(dir)) return 0;
    let sent = 0;
    for (const name of fs.readdirSync(dir).filter((n) => n.endsWith(".spool")).sort()) {
      const file = path.join(dir, name);
      const claimed = file + `.${process.pid}.replaying`;
      try {
        fs.renameSync(file, claimed); // another process may have taken it
      } catch {
        continue;
      }
      const batch: Pending[] = fs.readFileSync(claimed, "utf8").split("\n").filter(Boolean).map((line) => {
        const r = JSON.parse(line) as { t: string; k: string; v: string };
        return { topic: r.t, key: Buffer.from(r.k, "base64"), value: Buffer.from(r.v, "base64") };
      });
      try {
        await this.sendBatch(batch);
      } catch (err) {
        fs.renameSync(claimed, file);
        throw err;
      }
      fs.unlinkSync(claimed);
      sent += batch.length;
      this.stats.replayed += batch.length;
    }
    return sent;
  }

  async flush(timeoutMs: number): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new DeliveryError(`flush: not done after ${timeoutMs} ms`)), timeoutMs);
    });
    try {
      await Promise.race([(async () => {
        while (this.queue.length > 0 || this.loop !== null) await this.drain();
      })(), timeout]);
    } finally {
      clearTimeout(timer);
    }
  }

  async close(timeoutMs: number): Promise<void> {
    try {
      await this.flush(timeoutMs);
    } finally {
      if (this.connected !== null) await this.producer.disconnect();
    }
  }

  /** The last delivery error (records then went to the spool). */
  get error(): unknown {
    return this.lastError;
  }
}
