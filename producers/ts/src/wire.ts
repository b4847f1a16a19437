/**
 * The wire format (docs/wire.md): records, validation, ids, key, partition and the
 * Avro single-object encoding, written by hand (the schemas are fixed). Pure: no I/O.
 */
import { createHash } from "node:crypto";
import { InvalidUsageError, OversizeEventError } from "./errors";

export type Status = "OK" | "ERROR" | "PARTIAL";
export type GpuSource = "NONE" | "MEASURED" | "ESTIMATED";
/** An integer quantity; bigint for values past 2^53 (they are refused as absurd anyway). */
export type Quantity = number | bigint;
/**
 * A point in time: microseconds since the Unix epoch (number), a Date (millisecond
 * precision), or an ISO 8601 string with an offset ("2026-12-01T12:34:56.789012Z").
 */
export type EventTime = number | Date | string;

const STATUSES: readonly Status[] = ["OK", "ERROR", "PARTIAL"];
const GPU_SOURCES: readonly GpuSource[] = ["NONE", "MEASURED", "ESTIMATED"];

export interface Meters {
  inputTokens?: Quantity;
  outputTokens?: Quantity;
  cachedInputTokens?: Quantity;
  cacheWriteTokens?: Quantity;
  gpuMs?: Quantity;
  gpuType?: string;
  gpuSource?: GpuSource;
  cpuMs?: Quantity;
  apiCalls?: Quantity;
  /** Named quantities, written in iteration order (a Map or an array of pairs keeps it). */
  custom?: Record<string, Quantity> | Map<string, Quantity> | Array<[string, Quantity]>;
}

/** String maps: an object, a Map, or [key, value] pairs (written in that order). */
export type StringMap = Record<string, string> | Map<string, string> | Array<[string, string]>;

export interface UsageEvent {
  /** Derived with eventIdFor() when absent. */
  eventId?: string;
  tenant: string;
  requestId: string;
  nodeId: string;
  spanId: string;
  eventTime: EventTime;
  parentSpanId?: string | null;
  branchPath?: string;
  workflow?: string;
  model?: string | null;
  provider?: string | null;
  sequence?: number;
  meters?: Meters;
  status?: Status;
  billable?: boolean;
  nonBillableReason?: string | null;
  traceId?: string | null;
  producer?: string;
  attributes?: StringMap;
}

export interface RequestEnd {
  /** Derived with requestEndId() when absent. */
  eventId?: string;
  tenant: string;
  requestId: string;
  rootSpanId: string;
  spanCount: number;
  eventTime: EventTime;
  workflow?: string;
  status?: Status;
  attributes?: StringMap;
}

export const LIMITS = {
  inputTokens: 50_000_000,
  outputTokens: 50_000_000,
  cachedInputTokens: 50_000_000,
  cacheWriteTokens: 50_000_000,
  gpuMs: 7 * 24 * 3_600_000,
  cpuMs: 7 * 24 * 3_600_000 * 256,
  apiCalls: 10_000_000,
  custom: 1e15,
} as const;
const METER_NAMES = [
  ["inputTokens", "input_tokens"],
  ["outputTokens", "output_tokens"],
  ["cachedInputTokens", "cached_input_tokens"],
  ["cacheWriteTokens", "cache_write_tokens"],
  ["gpuMs", "gpu_ms"],
  ["cpuMs", "cpu_ms"],
  ["apiCalls", "api_calls"],
] as const;

export const MAX_ID_LEN = 256;
export const MAX_ATTRIBUTES = 64;
export const MAX_ATTRIBUTE_LEN = 2048;
export const MAX_CUSTOM_METERS = 32;
export const MAX_EVENT_BYTES = 64 * 1024;
export const MAX_SPAN_COUNT = 1_000_000;
export const MAX_SEQUENCE = 2 ** 31 - 1;
/** The worker stores 2000-01-01T00:00:00Z <= event_time < 2200-01-01T00:00:00Z. */
export const MIN_EVENT_MICROS = 946_684_800_000_000;
export const END_EVENT_MICROS = 7_258_118_400_000_000;

const TENANT_RE = /^[A-Za-z0-9][A-Za-z0-9_.:@-]{0,127}$/;
const CUSTOM_RE = /^[a-z][a-z0-9_.]{0,63}$/;
const LONE_SURROGATE = /\p{Surrogate}/u;

/** Fingerprints (CRC-64-AVRO of the canonical form), little-endian as on the wire. */
export const USAGE_EVENT_V2_FINGERPRINT = "71cf071f150cfc2f";
export const REQUEST_END_V1_FINGERPRINT = "02adeebda3e2ee58";
const USAGE_HEADER = Buffer.from("c301" + USAGE_EVENT_V2_FINGERPRINT, "hex");
const END_HEADER = Buffer.from("c301" + REQUEST_END_V1_FINGERPRINT, "hex");

// --- ids ----------------------------------------------------------------------------

function sha256Hex(parts: readonly string[]): string {
  return createHash("sha256").update(parts.join("\x1f"), "utf8").digest("hex");
}

/** event_id of a usage event: H32(tenant, request_id, span_id, sequence). */
export function eventIdFor(tenant: string, requestId: string, spanId: string, sequence: number): string {
  return sha256Hex([tenant, requestId, spanId, String(sequence)]).slice(0, 32);
}

/** event_id of a request end: H32(tenant, request_id, "__end__", 0). */
export function requestEndId(tenant: string, requestId: string): string {
  return eventIdFor(tenant, requestId, "__end__", 0);
}

export function rootSpanId(requestId: string): string {
  return sha256Hex([requestId, "__root__"]).slice(0, 16);
}

export function childSpanId(
  requestId: string, parentSpanId: string, branchPath: string, nodeId: string, occurrence: number,
): string {
  return sha256Hex([requestId, parentSpanId, branchPath, nodeId, String(occurrence)]).slice(0, 16);
}

// --- key and partition ------------------------------------------------------------------

const CRC32_TABLE = (() => {
  const table = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    table[n] = c >>> 0;
  }
  return table;
})();

/** CRC-32 (zlib / IEEE 802.3), unsigned. */
export function crc32(data: Uint8Array): number {
  let c = 0xffffffff;
  for (let i = 0; i < data.length; i++) c = (CRC32_TABLE[(c ^ data[i]!) & 0xff]! ^ (c >>> 8)) >>> 0;
  return (c ^ 0xffffffff) >>> 0;
}

/** The Kafka key: UTF-8 of `tenant/request_id`. */
export function keyFor(tenant: string, requestId: string): Buffer {
  return Buffer.from(`${tenant}/${requestId}`, "utf8");
}

/** librdkafka's consistent_random for a non-empty key: crc32(key) mod partitions. */
export function partitionFor(key: Uint8Array, partitions: number): number {
  return crc32(key) % partitions;
}

/** CRC-64-AVRO ("Rabin") of a schema's canonical form; hex of the little-endian bytes. */
export function avroFingerprint(canonical: string): string {
  const EMPTY = 0xc15d213aa4d7a795n;
  const table: bigint[] = [];
  for (let i = 0; i < 256; i++) {
    let fp = BigInt(i);
    for (let j = 0; j < 8; j++) fp = (fp >> 1n) ^ (EMPTY & -(fp & 1n));
    table.push(fp);
  }
  let fp = EMPTY;
  for (const b of Buffer.from(canonical, "utf8")) fp = (fp >> 8n) ^ table[Number((fp ^ BigInt(b)) & 0xffn)]!;
  const out = Buffer.alloc(8);
  out.writeBigUInt64LE(BigInt.asUintN(64, fp));
  return out.toString("hex");
}

// --- time ---------------------------------------------------------------------------------

const ISO_RE = /^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?(Z|[+-]\d{2}:\d{2})$/;

/** Microseconds since the epoch; `invalid_time` for what is not an instant (no offset). */
export function toMicros(value: unknown, field = "event_time"): number {
  if (typeof value === "number") {
    if (!Number.isSafeInteger(value)) throw new InvalidUsageError(`${field} must be integer microseconds`, "invalid_time");
    return value;
  }
  if (value instanceof Date) {
    const ms = value.getTime();
    if (Number.isNaN(ms)) throw new InvalidUsageError(`${field} is an invalid Date`, "invalid_time");
    return ms * 1000;
  }
  if (typeof value === "string") {
    const m = ISO_RE.exec(value);
    if (m === null) {
      throw new InvalidUsageError(
        `${field} ${JSON.stringify(value)} must be ISO 8601 with a UTC offset (Z or +hh:mm)`, "invalid_time");
    }
    const [, y, mo, d, h, mi, s, frac, off] = m as unknown as string[];
    const ms = Date.UTC(+y!, +mo! - 1, +d!, +h!, +mi!, +s!);
    if (Number.isNaN(ms)) throw new InvalidUsageError(`${field} is not a date`, "invalid_time");
    const micros = frac ? Number((frac + "00000").slice(0, 6)) : 0;
    let offsetMin = 0;
    if (off !== "Z") {
      offsetMin = (+off!.slice(1, 3) * 60 + +off!.slice(4, 6)) * (off!.startsWith("-") ? -1 : 1);
    }
    return (ms - offsetMin * 60_000) * 1000 + micros;
  }
  throw new InvalidUsageError(`${field} must be microseconds, a Date or an ISO string`, "invalid_time");
}

/** The host clock in microseconds since the epoch. */
export function nowMicros(): number {
  return Math.floor((performance.timeOrigin + performance.now()) * 1000);
}

// --- validation ---------------------------------------------------------------------------

function codePoints(s: string): number {
  let n = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c >= 0xd800 && c <= 0xdbff && i + 1 < s.length) {
      const d = s.charCodeAt(i + 1);
      if (d >= 0xdc00 && d <= 0xdfff) i++;
    }
    n++;
  }
  return n;
}

/** Length in code points (Python `len`), cheap when it cannot be over `limit`. */
function over(s: string, limit: number): boolean {
  return s.length > limit && codePoints(s) > limit;
}

function checkText(name: string, value: unknown): asserts value is string {
  if (typeof value !== "string") {
    throw new InvalidUsageError(`${name} must be a string, got ${typeof value}`, `invalid_${name}`);
  }
  if (LONE_SURROGATE.test(value)) {
    throw new InvalidUsageError(`${name} holds a lone UTF-16 surrogate (not Unicode text)`, `invalid_${name}`);
  }
}

/** An id or short text: `missing_<name>` when required and empty, `oversize` past 256. */
export function checkId(name: string, value: unknown, required = true): void {
  if (value === null || value === undefined || value === "") {
    if (required) throw new InvalidUsageError(`${name} is required`, `missing_${name}`);
    return;
  }
  checkText(name, value);
  if (over(value, MAX_ID_LEN)) throw new OversizeEventError(`${name} is longer than ${MAX_ID_LEN} chars`);
}

export function validateTenant(tenant: unknown): asserts tenant is string {
  checkId("tenant", tenant);
  if (!TENANT_RE.test(tenant as string)) {
    throw new InvalidUsageError(
      `tenant ${JSON.stringify(tenant)} must match ${TENANT_RE.source} (letters, digits, _ . : @ -)`, "invalid_tenant");
  }
}

function validateQuantity(name: string, value: unknown, limit: number): void {
  let n: bigint;
  if (typeof value === "bigint") n = value;
  else if (typeof value === "number" && Number.isInteger(value)) n = BigInt(value);
  else throw new InvalidUsageError(`${name} must be an integer, got ${JSON.stringify(value)}`, "invalid_quantity");
  if (n < 0n) throw new InvalidUsageError(`${name} must not be negative, got ${n}`, "negative_quantity");
  if (n > BigInt(limit)) {
    throw new InvalidUsageError(`${name}=${n} exceeds the per-record limit ${limit}`, "absurd_quantity");
  }
}

export function entries<V>(map: Record<string, V> | Map<string, V> | Array<[string, V]> | undefined | null,
  reason: string): Array<[string, V]> {
  if (map === undefined || map === null) return [];
  if (Array.isArray(map)) return map;
  if (map instanceof Map) return [...map.entries()];
  if (typeof map === "object") return Object.entries(map);
  throw new InvalidUsageError("expected a map of names to values", reason);
}

export function validateMeters(meters: unknown): void {
  if (meters === undefined) return;
  if (meters === null || typeof meters !== "object") {
    throw new InvalidUsageError("meters must be a Meters object", "invalid_meters");
  }
  const m = meters as Meters;
  for (const [name, wire] of METER_NAMES) validateQuantity(wire, m[name] ?? 0, LIMITS[name]);
  const custom = entries(m.custom, "invalid_meter");
  if (custom.length > MAX_CUSTOM_METERS) {
    throw new OversizeEventError(`${custom.length} custom meters; the limit is ${MAX_CUSTOM_METERS}`);
  }
  for (const [cname, qty] of custom) {
    if (typeof cname !== "string" || !CUSTOM_RE.test(cname)) {
      throw new InvalidUsageError(`custom meter name ${JSON.stringify(cname)} must match ${CUSTOM_RE.source}`,
        "invalid_meter");
    }
    validateQuantity(`custom:${cname}`, qty, LIMITS.custom);
  }
  const source = m.gpuSource ?? "NONE";
  if (!GPU_SOURCES.includes(source)) {
    throw new InvalidUsageError(`gpu_source must be one of ${GPU_SOURCES.join(", ")}, got ${JSON.stringify(source)}`,
      "invalid_gpu_source");
  }
  if ((m.gpuMs ?? 0) != 0 && source === "NONE") {
    throw new InvalidUsageError("gpu_ms given without gpu_source (MEASURED or ESTIMATED)", "invalid_gpu_source");
  }
  if (m.gpuType !== undefined) {
    checkText("gpu_type", m.gpuType);
    if (over(m.gpuType, MAX_ID_LEN)) throw new OversizeEventError("gpu_type too long");
  }
}

export function validateAttributes(attributes: unknown): void {
  if (attributes === undefined) return;
  if (attributes === null || typeof attributes !== "object") {
    throw new InvalidUsageError("attributes must map strings to strings", "invalid_attributes");
  }
  const pairs = entries(attributes as StringMap, "invalid_attributes");
  if (pairs.length > MAX_ATTRIBUTES) {
    throw new OversizeEventError(`${pairs.length} attributes; the limit is ${MAX_ATTRIBUTES}`);
  }
  for (const pair of pairs) {
    const [k, v] = pair as unknown[];
    if (typeof k !== "string" || typeof v !== "string" || LONE_SURROGATE.test(k) || LONE_SURROGATE.test(v)) {
      throw new InvalidUsageError("attributes must map strings to strings", "invalid_attributes");
    }
    if (over(k, MAX_ID_LEN) || over(v, MAX_ATTRIBUTE_LEN)) {
      throw new OversizeEventError(
        `attribute ${JSON.stringify(k.slice(0, 40))} is too long (key <= ${MAX_ID_LEN}, value <= ${MAX_ATTRIBUTE_LEN} chars)`);
    }
  }
}

function validateStatus(value: unknown): void {
  if (!STATUSES.includes(value as Status)) {
    throw new InvalidUsageError(`status must be one of ${STATUSES.join(", ")}, got ${JSON.stringify(value)}`,
      "invalid_status");
  }
}

function validateTime(value: unknown): number {
  return toMicros(value);
}

/**
 * After the rules: future_event_time past `notAfter` (micros), then the range the worker
 * stores (a producer refuses what the worker would dead-letter as invalid_time).
 */
function checkTimeBounds(eventTime: EventTime, notAfter: number | undefined, skewS: number): void {
  const micros = toMicros(eventTime);
  if (notAfter !== undefined && micros > notAfter) {
    throw new InvalidUsageError(`event_time is more than ${skewS} s ahead of this host's clock`, "future_event_time");
  }
  if (micros < MIN_EVENT_MICROS || micros >= END_EVENT_MICROS) {
    throw new InvalidUsageError("event_time must be in 2000-01-01 .. 2200-01-01 UTC", "invalid_time");
  }
}

/** `notAfter`: the latest event time accepted (clock + skew, micros); undefined: no bound. */
export interface EncodeOptions {
  notAfter?: number;
  maxFutureSkewS?: number;
}

/** The rules of docs/wire.md, in the Python SDK's order (so the same reason comes first). */
export function validateUsageEvent(e: UsageEvent): void {
  validateTenant(e.tenant);
  for (const [name, value] of [["event_id", e.eventId], ["request_id", e.requestId], ["node_id", e.nodeId],
    ["span_id", e.spanId]] as const) checkId(name, value);
  checkId("parent_span_id", e.parentSpanId, false);
  checkId("workflow", e.workflow, false);
  checkId("model", e.model, false);
  checkId("provider", e.provider, false);
  checkId("trace_id", e.traceId, false);
  checkId("producer", e.producer, false);
  for (const [name, value] of [["branch_path", e.branchPath], ["workflow", e.workflow],
    ["producer", e.producer]] as const) if (value !== undefined) checkText(name, value);
  if (e.branchPath !== undefined && over(e.branchPath, MAX_ID_LEN)) throw new OversizeEventError("branch_path too long");
  const seq: unknown = e.sequence ?? 0;
  if (typeof seq !== "number" || !Number.isInteger(seq) || seq < 0) {
    throw new InvalidUsageError(`sequence must be a non-negative integer, got ${JSON.stringify(seq)}`, "invalid_sequence");
  }
  if (seq > MAX_SEQUENCE) throw new InvalidUsageError(`sequence must be <= ${MAX_SEQUENCE}`, "invalid_sequence");
  validateStatus(e.status ?? "OK");
  if (e.billable !== undefined && typeof e.billable !== "boolean") {
    throw new InvalidUsageError(`billable must be true or false, got ${JSON.stringify(e.billable)}`, "invalid_billable");
  }
  const reason: unknown = e.nonBillableReason;
  if (reason !== undefined && reason !== null) checkText("non_billable_reason", reason);
  validateTime(e.eventTime);
  validateMeters(e.meters);
  validateAttributes(e.attributes);
}

export function validateRequestEnd(e: RequestEnd): void {
  validateTenant(e.tenant);
  for (const [name, value] of [["event_id", e.eventId], ["request_id", e.requestId],
    ["root_span_id", e.rootSpanId]] as const) checkId(name, value);
  if (e.workflow !== undefined) checkText("workflow", e.workflow);
  validateStatus(e.status ?? "OK");
  const n: unknown = e.spanCount;
  if (typeof n !== "number" || !Number.isInteger(n) || n < 0) {
    throw new InvalidUsageError(`span_count must be a non-negative integer, got ${JSON.stringify(n)}`,
      "invalid_span_count");
  }
  if (n > MAX_SPAN_COUNT) throw new InvalidUsageError(`span_count=${n} is absurd`, "absurd_quantity");
  validateTime(e.eventTime);
  validateAttributes(e.attributes);
}

// --- encoding ------------------------------------------------------------------------------

class Writer {
  buf = Buffer.allocUnsafe(256);
  pos = 0;
  private room(n: number): void {
    if (this.pos + n <= this.buf.length) return;
    const next = Buffer.allocUnsafe(Math.max(this.buf.length * 2, this.pos + n));
    this.buf.copy(next, 0, 0, this.pos);
    this.buf = next;
  }
  bytes(b: Uint8Array): void {
    this.room(b.length);
    this.buf.set(b, this.pos);
    this.pos += b.length;
  }
  byte(b: number): void {
    this.room(1);
    this.buf[this.pos++] = b;
  }
  long(v: number | bigint): void {
    this.room(10);
    if (typeof v === "number" && Number.isSafeInteger(v) && Math.abs(v) < 2 ** 51) {
      let z = v >= 0 ? v * 2 : -v * 2 - 1;
      while (z >= 0x80) {
        this.buf[this.pos++] = (z % 0x80) | 0x80;
        z = Math.floor(z / 0x80);
      }
      this.buf[this.pos++] = z;
      return;
    }
    const n = BigInt.asIntN(64, BigInt(v));
    let z = BigInt.asUintN(64, (n << 1n) ^ (n >> 63n));
    while (z >= 0x80n) {
      this.buf[this.pos++] = Number(z & 0x7fn) | 0x80;
      z >>= 7n;
    }
    this.buf[this.pos++] = Number(z);
  }
  string(s: string): void {
    const n = Buffer.byteLength(s, "utf8");
    this.long(n);
    this.room(n);
    this.buf.write(s, this.pos, "utf8");
    this.pos += n;
  }
  optString(s: string | null | undefined): void {
    if (s === null || s === undefined) this.byte(0);
    else {
      this.byte(2);
      this.string(s);
    }
  }
  map<V>(pairs: Array<[string, V]>, value: (v: V) => void): void {
    if (pairs.length > 0) {
      this.long(pairs.length);
      for (const [k, v] of pairs) {
        this.string(k);
        value(v);
      }
    }
    this.byte(0);
  }
  done(): Buffer {
    return Buffer.from(this.buf.subarray(0, this.pos));
  }
}

/** Avro single-object encoding of a usage event (usage_event v2), with no checks. */
export function encodeUsageEventUnchecked(e: UsageEvent): Buffer {
  const w = new Writer();
  w.bytes(USAGE_HEADER);
  const m = e.meters ?? {};
  w.string(e.eventId ?? eventIdFor(e.tenant, e.requestId, e.spanId, e.sequence ?? 0));
  w.string(e.tenant);
  w.string(e.requestId);
  w.string(e.nodeId);
  w.string(e.spanId);
  w.optString(e.parentSpanId);
  w.string(e.branchPath ?? "");
  w.string(e.workflow ?? "");
  w.optString(e.model);
  w.optString(e.provider);
  w.long(e.sequence ?? 0);
  w.long(m.inputTokens ?? 0);
  w.long(m.outputTokens ?? 0);
  w.long(m.cachedInputTokens ?? 0);
  w.long(m.cacheWriteTokens ?? 0);
  w.long(m.gpuMs ?? 0);
  w.string(m.gpuType ?? "");
  w.long(GPU_SOURCES.indexOf(m.gpuSource ?? "NONE"));
  w.long(m.cpuMs ?? 0);
  w.long(m.apiCalls ?? 0);
  w.map(entries(m.custom, "invalid_meter"), (v) => w.long(v));
  w.long(STATUSES.indexOf(e.status ?? "OK"));
  w.byte(e.billable === false ? 0 : 1);
  w.optString(e.nonBillableReason);
  w.long(toMicros(e.eventTime));
  w.optString(e.traceId);
  w.string(e.producer ?? "");
  w.map(entries(e.attributes, "invalid_attributes"), (v) => w.string(v));
  return w.done();
}

/** Avro single-object encoding of a request end (request_end v1), with no checks. */
export function encodeRequestEndUnchecked(e: RequestEnd): Buffer {
  const w = new Writer();
  w.bytes(END_HEADER);
  w.string(e.eventId ?? requestEndId(e.tenant, e.requestId));
  w.string(e.tenant);
  w.string(e.requestId);
  w.string(e.workflow ?? "");
  w.string(e.rootSpanId);
  w.long(e.spanCount);
  w.long(STATUSES.indexOf(e.status ?? "OK"));
  w.long(toMicros(e.eventTime));
  w.map(entries(e.attributes, "invalid_attributes"), (v) => w.string(v));
  return w.done();
}

function checkSize(value: Buffer): Buffer {
  if (value.length > MAX_EVENT_BYTES) {
    throw new OversizeEventError(`the encoded record is ${value.length} bytes; the limit is ${MAX_EVENT_BYTES}`);
  }
  return value;
}

/** Validate (InvalidUsageError with the wire reason) and encode a usage event. */
export function encodeUsageEvent(e: UsageEvent, options: EncodeOptions = {}): Buffer {
  const full = e.eventId === undefined ? { ...e, eventId: eventIdFor(e.tenant, e.requestId, e.spanId, e.sequence ?? 0) } : e;
  validateUsageEvent(full);
  checkTimeBounds(full.eventTime, options.notAfter, options.maxFutureSkewS ?? 300);
  return checkSize(encodeUsageEventUnchecked(full));
}

/** Validate and encode a request end. */
export function encodeRequestEnd(e: RequestEnd, options: EncodeOptions = {}): Buffer {
  const full = e.eventId === undefined ? { ...e, eventId: requestEndId(e.tenant, e.requestId) } : e;
  validateRequestEnd(full);
  checkTimeBounds(full.eventTime, options.notAfter, options.maxFutureSkewS ?? 300);
  return checkSize(encodeRequestEndUnchecked(full));
}

