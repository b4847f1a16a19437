import { test } from "node:test";
import * as assert from "node:assert/strict";
import { InvalidUsageError, Meter, MemoryTransport, usageFromAnthropic, usageFromOpenAI } from "../src/index";
import { load } from "./vectors";

/** Minimal reader of the fields these tests look at (usage_event v2 / request_end v1). */
function decode(value: Buffer): Record<string, unknown> {
  let pos = 10;
  const long = (): number => {
    let shift = 0, zz = 0;
    for (;;) {
      const b = value[pos++]!;
      zz += (b & 0x7f) * 2 ** shift;
      shift += 7;
      if (b < 0x80) break;
    }
    return zz % 2 === 0 ? zz / 2 : -(zz + 1) / 2;
  };
  const str = (): string => {
    const n = long();
    const s = value.subarray(pos, pos + n).toString("utf8");
    pos += n;
    return s;
  };
  const opt = (): string | null => (long() === 0 ? null : str());
  const status = ["OK", "ERROR", "PARTIAL"];
  if (value.subarray(2, 10).toString("hex") === "02adeebda3e2ee58") {
    const r = { kind: "end", event_id: str(), tenant: str(), request_id: str(), workflow: str(), root_span_id: str(),
      span_count: long(), status: status[long()] };
    return r;
  }
  const r: Record<string, unknown> = { kind: "usage", event_id: str(), tenant: str(), request_id: str(), node_id: str(),
    span_id: str(), parent_span_id: opt(), branch_path: str(), workflow: str(), model: opt(), provider: opt(),
    sequence: long() };
  const meters = [long(), long(), long(), long(), long()];
  str(); long(); long();
  r.api_calls = long();
  r.tokens = meters;
  long(); // custom {}
  r.status = status[long()];
  return r;
}

interface Child { node?: string; records?: number; children?: Child[]; raises?: boolean; parallel?: Child[];
  branch?: string }

async function run(meter: Meter, c: Child): Promise<void> {
  if (c.parallel) {
    await meter.parallel(c.parallel.map((p) => () => run(meter, p)));
  } else if (c.branch !== undefined) {
    await meter.branch(c.branch, async () => { for (const ch of c.children ?? []) await run(meter, ch); });
  } else {
    const body = async (): Promise<void> => {
      await meter.node(c.node!, async (span) => {
        for (let i = 1; i <= (c.records ?? 0); i++) span.record({ apiCalls: i });
        await new Promise((r) => setImmediate(r));
        for (const ch of c.children ?? []) await run(meter, ch);
        if (c.raises) throw new Error("boom");
      });
    };
    if (c.raises) await body().catch(() => undefined);
    else await body();
  }
}

const requests = load("requests.json");
for (const v of requests.vectors) {
  test(`requests.json ${v.name}: every record's ids and the request end`, async () => {
    const t = new MemoryTransport();
    const meter = new Meter({ transport: t, tenants: null });
    await meter.request({ tenant: v.tenant, requestId: v.request_id, workflow: v.workflow, nodeId: v.root.node_id },
      async (root) => {
        for (let i = 1; i <= v.root.records; i++) root.record({ apiCalls: i });
        for (const c of v.root.children) await run(meter, c);
      });
    const got = t.records.map((r) => decode(r.value));
    const usage = got.filter((r) => r.kind === "usage");
    const key = (r: any): string => JSON.stringify([r.node_id, r.span_id, r.parent_span_id, r.branch_path, r.sequence,
      r.status, r.event_id]);
    assert.deepEqual(usage.map(key).sort(), v.expected.usage_events.map(key).sort());
    const end = got[got.length - 1] as any;
    assert.equal(end.kind, "end");
    assert.deepEqual({ root_span_id: end.root_span_id, span_count: end.span_count, status: end.status,
      event_id: end.event_id }, v.expected.request_end);
    for (const r of t.records) assert.equal(r.key.toString(), `${v.tenant}/${v.request_id}`);
  });
}

test("outside a request: no_request; a bad branch key: invalid_branch", async () => {
  const meter = new Meter({ transport: new MemoryTransport(), tenants: null });
  await assert.rejects(meter.node("x", async () => 1), (e: unknown) => e instanceof InvalidUsageError && e.reason === "no_request");
  await meter.request({ tenant: "acme" }, async () => {
    assert.throws(() => meter.branch("a.b", async () => 1), (e: unknown) => e instanceof InvalidUsageError && e.reason === "invalid_branch");
  });
});

test("bad input fails at the call, the request still ends with what was sent", async () => {
  const t = new MemoryTransport();
  const meter = new Meter({ transport: t, tenants: ["acme"] });
  await assert.rejects(meter.request({ tenant: "globex" }, async () => 1),
    (e: unknown) => e instanceof InvalidUsageError && e.reason === "unknown_tenant");
  await meter.request({ tenant: "acme", requestId: "r1" }, async (root) => {
    assert.throws(() => root.record({ inputTokens: -1 }), (e: unknown) => e instanceof InvalidUsageError && e.reason === "negative_quantity");
    assert.throws(() => root.record({ gpuMs: 5, gpuSource: "NONE" }), (e: unknown) => e instanceof InvalidUsageError && e.reason === "invalid_gpu_source");
    root.record({ outputTokens: 3 });
  });
  const got = t.records.map((r) => decode(r.value));
  assert.equal(got.length, 2);
  assert.equal((got[1] as any).span_count, 1);
});

test("a failing request: its usage is ERROR, the end is ERROR, the error propagates", async () => {
  const t = new MemoryTransport();
  const meter = new Meter({ transport: t, tenants: null });
  await assert.rejects(meter.request({ tenant: "acme", requestId: "r2" }, async () => {
    await meter.node("llm", async (span) => { span.record({ apiCalls: 1 }); throw new Error("provider down"); });
  }), /provider down/);
  const got = t.records.map((r) => decode(r.value)) as any[];
  assert.deepEqual(got.map((r) => [r.kind, r.status]), [["usage", "ERROR"], ["end", "ERROR"]]);
  assert.equal(got[1].span_count, 1);
});

test("OpenAI and Anthropic usage count cached tokens once", async () => {
  assert.deepEqual(usageFromOpenAI({ model: "gpt-4o", usage: { prompt_tokens: 1000, completion_tokens: 50,
    prompt_tokens_details: { cached_tokens: 800 } } }),
  { inputTokens: 200, outputTokens: 50, cachedInputTokens: 800, apiCalls: 1 });
  assert.deepEqual(usageFromOpenAI({ usage: { input_tokens: 10, output_tokens: 2, input_tokens_details: { cached_tokens: 4 } } }),
    { inputTokens: 6, outputTokens: 2, cachedInputTokens: 4, apiCalls: 1 });
  assert.throws(() => usageFromOpenAI({ usage: { prompt_tokens: 1, prompt_tokens_details: { cached_tokens: 2 } } }),
    (e: unknown) => e instanceof InvalidUsageError && e.reason === "invalid_quantity");
  assert.deepEqual(usageFromAnthropic({ usage: { input_tokens: 20, output_tokens: 7, cache_read_input_tokens: 500,
    cache_creation_input_tokens: 100 } }),
  { inputTokens: 20, outputTokens: 7, cachedInputTokens: 500, cacheWriteTokens: 100, apiCalls: 1 });
  const t = new MemoryTransport();
  const meter = new Meter({ transport: t, tenants: null });
  await meter.request({ tenant: "acme", requestId: "r3" }, async () => {
    await meter.node("llm", async (span) => {
      span.recordOpenAI({ model: "gpt-4o", usage: { prompt_tokens: 1000, completion_tokens: 50,
        prompt_tokens_details: { cached_tokens: 800 } } });
    });
  });
  const usage = decode(t.records[0]!.value) as any;
  assert.deepEqual([usage.model, usage.provider, usage.tokens.slice(0, 3)], ["gpt-4o", "openai", [200, 50, 800]]);
});
