import { test } from "node:test";
import * as assert from "node:assert/strict";
import * as fs from "node:fs";
import * as net from "node:net";
import * as os from "node:os";
import * as path from "node:path";
import { KafkaTransport } from "../src/index";

// A broker address that accepts connections and never answers (a stalled broker, a
// network black hole): kafkajs' connect waits out its own timeouts and retries. The
// batch must still go to the spool within deliveryTimeoutMs, connecting included.

test("deliveryTimeoutMs bounds the connect too: a black-hole broker spools in time", async () => {
  const sockets: net.Socket[] = [];
  const hole = net.createServer((s) => { sockets.push(s); }); // reads nothing, says nothing
  await new Promise<void>((resolve) => hole.listen(0, "127.0.0.1", resolve));
  const port = (hole.address() as net.AddressInfo).port;
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "nm-hole-"));
  const t = new KafkaTransport({ brokers: [`127.0.0.1:${port}`], spoolDir: dir, deliveryTimeoutMs: 500 });
  try {
    const t0 = Date.now();
    t.send("usage", Buffer.from("acme/r1"), Buffer.from("v1"));
    await t.flush(60_000);
    const took = Date.now() - t0;
    assert.equal(t.stats.spooled, 1);
    assert.equal(t.stats.delivered, 0);
    assert.match(String(t.error), /deliveryTimeoutMs \(500 ms\)/);
    // the bound the option promises, with room for a loaded machine; kafkajs alone
    // would take its connect retries (several seconds)
    assert.ok(took < 500 + 2_000, `spooled after ${took} ms`);
    assert.equal(t.spooledFiles(), 1);
  } finally {
    await t.close(100).catch(() => undefined);
    for (const s of sockets) s.destroy();
    hole.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
