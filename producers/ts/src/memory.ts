import type { Transport } from "./meter";

/** Keeps what is sent, in order: for tests. */
export class MemoryTransport implements Transport {
  readonly records: Array<{ topic: string; key: Buffer; value: Buffer }> = [];
  send(topic: string, key: Buffer, value: Buffer): void {
    this.records.push({ topic, key, value });
  }
  async flush(): Promise<void> {}
  async close(): Promise<void> {}
}
