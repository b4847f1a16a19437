/**
 * The Meter: request and node scopes carried in AsyncLocalStorage, deterministic ids,
 * the request end with its span count, and a transport (Kafka by default).
 *
 *   await meter.request({ tenant: "acme" }, async () => {
 *     await meter.node("retrieve", async (span) => span.record({ apiCalls: 1 }));
 *     await meter.parallel([() => meter.node("a", work), () => meter.node("b", work)]);
 *   });
 */
import { AsyncLocalStorage } from "node:async_hooks";
import { randomUUID } from "node:crypto";
import { ConfigError, InvalidUsageError, NodemeterError, OversizeEventError } from "./errors";
import type { KafkaTransportOptions } from "./kafka";
import { usageFromAnthropic, usageFromOpenAI, modelOf } from "./integrations";
import {
  checkId, childSpanId, encodeRequestEnd, encodeUsageEvent,
  encodeUsageEventUnchecked, eventIdFor, keyFor, MAX_EVENT_BYTES, nowMicros, requestEndId, rootSpanId,
  validateAttributes, validateMeters, validateTenant,
  type Meters, type RequestEnd, type Status, type StringMap, type UsageEvent, entries,
} from "./wire";

export const VERSION = "0.1.0";
export const PRODUCER_NAME = `nodemeter-ts/${VERSION}`;

/** Where encoded records go: the Kafka transport, or an in-memory one in tests. */
export interface Transport {
  /** Take one record (never throws for a broker problem: it retries, then spools). */
  send(topic: string, key: Buffer, value: Buffer): void;
  /** Resolve once every record taken so far is acknowledged or spooled. */
  flush(timeoutMs: number): Promise<void>;
  close(timeoutMs: number): Promise<void>;
  /** Send what an earlier failure left in the spool; resolves to the records sent. */
  replay?(): Promise<number>;
}

export interface MeterOptions {
  /** Default: a KafkaTransport from NODEMETER_KAFKA_BOOTSTRAP (127.0.0.1:19092). */
  transport?: Transport;
  /** Options of the default Kafka transport (brokers, spoolDir, lingerMs, ...). */
  kafka?: KafkaTransportOptions;
  /** Default: NODEMETER_TOPIC_PREFIX + "nodemeter.usage.v1". */
  topic?: string;
  /** Microseconds since the epoch. */
  clock?: () => number;
  /** Usage dated further ahead of the clock is refused (future_event_time). Default 300. */
  maxFutureSkewS?: number;
  /** Known tenants: any other is refused (unknown_tenant). Default: NODEMETER_TENANTS, else any. */
  tenants?: Iterable<string> | null;
  producerName?: string;
}

export interface RequestOptions {
  tenant: string;
  requestId?: string;
  workflow?: string;
  nodeId?: string;
  attributes?: StringMap;
  traceId?: string;
  model?: string;
  provider?: string;
}

export interface NodeOptions {
  model?: string;
  provider?: string;
  billable?: boolean;
  nonBillableReason?: string;
  attributes?: StringMap;
  /** Give the span its own id instead of the derived one. */
  spanId?: string;
}

export interface RecordOptions extends Meters {
  model?: string;
  provider?: string;
}

class RequestState {
  emitted = 0;
  constructor(
    readonly meter: Meter, readonly tenant: string, readonly requestId: string, readonly workflow: string,
    readonly traceId: string | undefined, readonly attributes: Array<[string, string]>,
  ) {}
}

/** One flow of work: the request's own, or one started with fork()/parallel()/branch(). */
class Task {
  constructor(public branch: string | null = null) {}
}

interface Frame {
  span: Span;
  task: Task;
}

const storage = new AsyncLocalStorage<Frame>();

function mergeAttrs(a: Array<[string, string]>, b: Array<[string, string]>): Array<[string, string]> {
  if (a.length === 0) return b;
  if (b.length === 0) return a;
  const m = new Map(a);
  for (const [k, v] of b) m.set(k, v);
  return [...m.entries()];
}

function cleanAttrs(attrs: StringMap | undefined): Array<[string, string]> {
  if (attrs === undefined) return [];
  validateAttributes(attrs);
  return [...new Map(entries(attrs, "invalid_attributes")).entries()];
}

/** One node execution. Record usage on it; it is emitted when the span ends. */
export class Span {
  status: Status = "OK";
  billable: boolean;
  nonBillableReason: string | undefined;
  private readonly records: Array<{ meters: Meters; model: string | undefined; provider: string | undefined }> = [];
  private readonly occurrences = new Map<string, number>();
  private branches = 0;
  private attributes: Array<[string, string]>;

  /** @internal */
  constructor(
    readonly request: RequestState, readonly nodeId: string, readonly spanId: string,
    readonly parentSpanId: string | null, readonly branchPath: string, readonly task: Task,
    readonly model: string | undefined, readonly provider: string | undefined,
    billable: boolean, nonBillableReason: string | undefined, attributes: Array<[string, string]>,
  ) {
    this.billable = billable;
    this.nonBillableReason = nonBillableReason;
    this.attributes = attributes;
    this.check(undefined, "node " + JSON.stringify(nodeId));
  }

  get tenant(): string { return this.request.tenant; }
  get requestId(): string { return this.request.requestId; }
  /** Usage records so far (copies). */
  get recorded(): Meters[] { return this.records.map((r) => ({ ...r.meters })); }

  private event(sequence: number, rec: { meters: Meters; model?: string | undefined; provider?: string | undefined },
    failed: boolean, eventTime: number): UsageEvent {
    const req = this.request;
    return {
      eventId: eventIdFor(req.tenant, req.requestId, this.spanId, sequence),
      tenant: req.tenant, requestId: req.requestId, nodeId: this.nodeId, spanId: this.spanId,
      parentSpanId: this.parentSpanId, branchPath: this.branchPath, workflow: req.workflow,
      model: rec.model ?? this.model ?? null, provider: rec.provider ?? this.provider ?? null,
      sequence, meters: rec.meters, status: failed ? "ERROR" : this.status, billable: this.billable,
      nonBillableReason: this.nonBillableReason ?? null, eventTime, traceId: req.traceId ?? null,
      producer: req.meter.producerName, attributes: mergeAttrs(req.attributes, this.attributes),
    };
  }

  /** Encode the span's records as they would be sent now: an oversize one fails here. */
  private check(extra: { meters: Meters; model?: string | undefined; provider?: string | undefined } | undefined,
    what: string): void {
    const recs = extra ? [...this.records, extra] : this.records.length ? this.records : [{ meters: {} }];
    const now = this.request.meter.clock();
    for (let i = 0; i < recs.length; i++) {
      const size = encodeUsageEventUnchecked(this.event(i, recs[i]!, false, now)).length;
      if (size > MAX_EVENT_BYTES) {
        throw new OversizeEventError(`${what}: the usage event would be ${size} bytes; the limit is ${MAX_EVENT_BYTES}`);
      }
    }
  }

  /** Add one usage record (validated here: InvalidUsageError on bad input). */
  record(usage: RecordOptions): Meters {
    const { model, provider, ...m } = usage;
    const meters: Meters = { ...m };
    if (meters.gpuSource === undefined && meters.gpuMs) meters.gpuSource = "MEASURED";
    if (meters.custom !== undefined) meters.custom = entries(meters.custom, "invalid_meter");
    validateMeters(meters);
    checkId("model", model, false);
    checkId("provider", provider, false);
    const rec = { meters, model, provider };
    this.check(rec, "record()");
    this.records.push(rec);
    return meters;
  }

  /** Record an OpenAI-style response's usage (cached tokens counted once). */
  recordOpenAI(response: unknown): Meters {
    return this.record({ ...usageFromOpenAI(response), model: modelOf(response) ?? this.model,
      provider: this.provider ?? "openai" });
  }

  /** Record an Anthropic-style response's usage (cache reads and writes apart). */
  recordAnthropic(response: unknown): Meters {
    return this.record({ ...usageFromAnthropic(response), model: modelOf(response) ?? this.model,
      provider: this.provider ?? "anthropic" });
  }

  setAttribute(key: string, value: string): void {
    const next = mergeAttrs(this.attributes, [[key, value]]);
    validateAttributes(next);
    validateAttributes(mergeAttrs(this.request.attributes, next));
    const old = this.attributes;
    this.attributes = next;
    try {
      this.check(undefined, `attribute ${JSON.stringify(key)}`);
    } catch (err) {
      this.attributes = old;
      throw err;
    }
  }

  /** Warm-up, cold start and similar work: emitted, but not charged. */
  markNonBillable(reason: string): void {
    if (reason === "") throw new InvalidUsageError("a non-billable mark needs its reason", "missing_non_billable_reason");
    checkId("non_billable_reason", reason);
    const old = [this.billable, this.nonBillableReason] as const;
    this.billable = false;
    this.nonBillableReason = reason;
    try {
      this.check(undefined, "non_billable_reason");
    } catch (err) {
      [this.billable, this.nonBillableReason] = old;
      throw err;
    }
  }

  markStatus(status: Status): void {
    if (status !== "OK" && status !== "ERROR" && status !== "PARTIAL") {
      throw new InvalidUsageError(`status must be OK, ERROR or PARTIAL, got ${JSON.stringify(status)}`, "invalid_status");
    }
    this.status = status;
  }

  /** @internal */
  childSpanId(nodeId: string, branchPath: string): string {
    const k = `${branchPath}\x00${nodeId}`;
    const n = this.occurrences.get(k) ?? 0;
    this.occurrences.set(k, n + 1);
    return childSpanId(this.request.requestId, this.spanId, branchPath, nodeId, n);
  }

  /** @internal */
  nextBranch(): number {
    return ++this.branches;
  }

  /** @internal Emit one usage event per record; the first failure is thrown unless failed. */
  finish(failed: boolean): void {
    if (this.records.length === 0) return;
    const req = this.request;
    const now = req.meter.clock();
    let firstError: unknown;
    for (let seq = 0; seq < this.records.length; seq++) {
      try {
        req.meter.emit(this.event(seq, this.records[seq]!, failed, now));
        req.emitted++;
      } catch (err) {
        firstError ??= err;
      }
    }
    if (firstError !== undefined) {
      if (failed) console.error(`nodemeter: usage of ${JSON.stringify(this.nodeId)} not sent:`, firstError);
      else throw firstError;
    }
  }
}

function requireFrame(): Frame {
  const frame = storage.getStore();
  if (frame === undefined) {
    throw new InvalidUsageError(
      "no active request: open one with meter.request({tenant}, async () => ...) first", "no_request");
  }
  return frame;
}

function branchPathFor(parent: Span, task: Task): string {
  if (task.branch !== null) return task.branch;
  if (parent.task === task) return parent.branchPath;
  // First span of a new flow under a parent opened elsewhere: a new branch.
  const n = parent.nextBranch();
  task.branch = parent.branchPath ? `${parent.branchPath}.${n}` : String(n);
  return task.branch;
}

function envTenants(): Set<string> | null {
  const raw = process.env.NODEMETER_TENANTS;
  if (!raw) return null;
  return new Set(raw.split(",").map((t) => t.trim()).filter(Boolean));
}

export class Meter {
  readonly topic: string;
  readonly clock: () => number;
  readonly producerName: string;
  readonly maxFutureSkewS: number;
  private readonly tenants: Set<string> | null;
  private transportValue: Transport | undefined;
  private readonly makeTransport: () => Transport;
  private closed = false;

  constructor(options: MeterOptions = {}) {
    this.topic = options.topic ?? (process.env.NODEMETER_TOPIC_PREFIX ?? "") + "nodemeter.usage.v1";
    this.clock = options.clock ?? nowMicros;
    this.producerName = options.producerName ?? PRODUCER_NAME;
    this.maxFutureSkewS = options.maxFutureSkewS ?? 300;
    if (!(this.maxFutureSkewS >= 0)) throw new ConfigError("maxFutureSkewS must be >= 0");
    this.tenants = options.tenants === undefined ? envTenants()
      : options.tenants === null ? null : new Set(options.tenants);
    const given = options.transport;
    this.makeTransport = () => {
      if (given) return given;
      // eslint-disable-next-line @typescript-eslint/no-require-imports
      const { KafkaTransport } = require("./kafka") as typeof import("./kafka");
      return new KafkaTransport(options.kafka);
    };
  }

  private get transport(): Transport {
    this.transportValue ??= this.makeTransport();
    return this.transportValue;
  }

  checkTenant(tenant: string): void {
    if (this.tenants !== null && !this.tenants.has(tenant)) {
      throw new InvalidUsageError(`unknown tenant ${JSON.stringify(tenant)}: not in Meter tenants / NODEMETER_TENANTS`,
        "unknown_tenant");
    }
  }

  /** Validate, encode and key a usage event without sending it. */
  prepare(event: UsageEvent): { key: Buffer; value: Buffer };
  prepare(end: RequestEnd): { key: Buffer; value: Buffer };
  prepare(record: UsageEvent | RequestEnd): { key: Buffer; value: Buffer } {
    const opts = { notAfter: this.clock() + this.maxFutureSkewS * 1_000_000, maxFutureSkewS: this.maxFutureSkewS };
    const value = "rootSpanId" in record ? encodeRequestEnd(record, opts) : encodeUsageEvent(record, opts);
    this.checkTenant(record.tenant);
    return { key: keyFor(record.tenant, record.requestId), value };
  }

  /** Validate (InvalidUsageError here), encode and send one record. */
  emit(record: UsageEvent | RequestEnd): void {
    const { key, value } = this.prepare(record as UsageEvent);
    if (this.closed) throw new NodemeterError("the meter is closed");
    this.transport.send(this.topic, key, value);
  }

  /** Run `fn` as the root span of one request; its RequestEnd is sent when it settles. */
  async request<T>(options: RequestOptions, fn: (span: Span) => T | Promise<T>): Promise<T> {
    validateTenant(options.tenant);
    this.checkTenant(options.tenant);
    checkId("request_id", options.requestId, false);
    checkId("workflow", options.workflow, false);
    checkId("node_id", options.nodeId ?? "request");
    checkId("trace_id", options.traceId, false);
    checkId("model", options.model, false);
    checkId("provider", options.provider, false);
    const requestId = options.requestId || randomUUID().replace(/-/g, "");
    const state = new RequestState(this, options.tenant, requestId, options.workflow ?? "", options.traceId,
      cleanAttrs(options.attributes));
    const task = new Task();
    const root = new Span(state, options.nodeId ?? "request", rootSpanId(requestId), null, "", task,
      options.model, options.provider, true, undefined, []);
    let failed = true;
    try {
      const result = await storage.run({ span: root, task }, () => fn(root));
      failed = false;
      return result;
    } finally {
      try {
        root.finish(failed);
      } finally {
        const end: RequestEnd = {
          eventId: requestEndId(state.tenant, state.requestId), tenant: state.tenant, requestId: state.requestId,
          rootSpanId: root.spanId, spanCount: state.emitted, eventTime: this.clock(), workflow: state.workflow,
          status: failed ? "ERROR" : root.status, attributes: state.attributes,
        };
        try {
          this.emit(end);
        } catch (err) {
          if (!failed) throw err;
          console.error("nodemeter: request end not sent:", err);
        }
      }
    }
  }

  /** Run `fn` as a node (child span) of the current span. */
  node<T>(nodeId: string, fn: (span: Span) => T | Promise<T>): Promise<T>;
  node<T>(nodeId: string, options: NodeOptions, fn: (span: Span) => T | Promise<T>): Promise<T>;
  async node<T>(nodeId: string, a: NodeOptions | ((span: Span) => T | Promise<T>),
    b?: (span: Span) => T | Promise<T>): Promise<T> {
    const options = typeof a === "function" ? {} : a;
    const fn = typeof a === "function" ? a : b;
    if (fn === undefined) throw new TypeError("meter.node(name, [options], fn): fn is required");
    checkId("node_id", nodeId);
    checkId("model", options.model, false);
    checkId("provider", options.provider, false);
    checkId("span_id", options.spanId, false);
    const attrs = cleanAttrs(options.attributes);
    const { span: parent, task } = requireFrame();
    const path = branchPathFor(parent, task);
    const spanId = options.spanId || parent.childSpanId(nodeId, path);
    const billable = options.billable ?? true;
    const reason = billable ? options.nonBillableReason : options.nonBillableReason || "non_billable";
    if (reason !== undefined) checkId("non_billable_reason", reason);
    const span = new Span(parent.request, nodeId, spanId, parent.spanId, path, task, options.model,
      options.provider, billable, reason, attrs);
    let failed = true;
    try {
      const result = await storage.run({ span, task }, () => fn(span));
      failed = false;
      return result;
    } finally {
      span.finish(failed);
    }
  }

  /**
   * Run `fn` as parallel work of the current span (like an asyncio task in Python): its
   * first node under a span opened elsewhere starts a new branch (path "1", "2", ...).
   * Plain Promise.all without fork() keeps every piece on the parent's path.
   */
  fork<T>(fn: () => T | Promise<T>): Promise<T> {
    const { span } = requireFrame();
    return Promise.resolve(storage.run({ span, task: new Task() }, fn));
  }

  /** Promise.all over forks, started in list order (the branch numbers follow it). */
  parallel<T>(fns: ReadonlyArray<() => T | Promise<T>>): Promise<T[]> {
    requireFrame();
    return Promise.all(fns.map((fn) => this.fork(fn)));
  }

  /** Run `fn` in the explicitly named branch `key` of the current span (stable ids). */
  branch<T>(key: string | number, fn: () => T | Promise<T>): Promise<T> {
    const { span } = requireFrame();
    const label = String(key);
    if (!label || label.includes(".") || label.length > 64) {
      throw new InvalidUsageError("branch key must be 1-64 chars without '.'", "invalid_branch");
    }
    const path = span.branchPath ? `${span.branchPath}.${label}` : label;
    return Promise.resolve(storage.run({ span, task: new Task(path) }, fn));
  }

  /** The innermost open span here, or undefined outside a request. */
  currentSpan(): Span | undefined {
    return storage.getStore()?.span;
  }

  /** Resolve once everything emitted so far is acknowledged by Kafka or spooled. */
  async flush(timeoutMs = 10_000): Promise<void> {
    if (this.transportValue) await this.transportValue.flush(timeoutMs);
  }

  /**
   * Send the spool now (records an earlier outage, in this process or an earlier one, left
   * there); resolves to how many went out, rejects when Kafka still does not take them.
   * The Kafka transport also does this on its own: on connect and every replayIntervalMs.
   */
  async replay(): Promise<number> {
    if (this.closed) throw new NodemeterError("the meter is closed");
    const t = this.transport;
    return t.replay ? t.replay() : 0;
  }

  /** Flush and disconnect; later emits throw. */
  async close(timeoutMs = 10_000): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.transportValue) await this.transportValue.close(timeoutMs);
  }
}

