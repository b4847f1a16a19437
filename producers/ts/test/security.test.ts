import { test } from "node:test";
import * as assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import * as tls from "node:tls";
import { inspect } from "node:util";
import { ConfigError, KafkaSecurity, KafkaSecurityError, KafkaTransport } from "../src/index";

// The NODEMETER_KAFKA_* security variables, as producers/go/env_test.go and the Python SDK's
// tests check them; tests/integration/test_ts_sdk.py runs them against the real SASL_SSL broker.

const SECRET = "s3cr3t-pa55";

function tmp(): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), "nm-sec-"));
}

/** A ConfigError naming `variable`, its message holding each of `says` and no secret. */
function refused(fn: () => unknown, variable: string, ...says: string[]): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof ConfigError, `want ConfigError, got ${String(err)}`);
    assert.equal(err.variable, variable, err.message);
    for (const s of says) assert.ok(err.message.includes(s), `${JSON.stringify(err.message)} does not say ${s}`);
    assert.ok(!err.message.includes(SECRET), err.message);
    return true;
  });
}

const from = (values: Record<string, string>) => () => KafkaSecurity.fromValues(values, "the environment");

test("security: PLAINTEXT by default, nothing given to kafkajs", () => {
  const s = KafkaSecurity.fromValues({});
  assert.equal(s.protocol, "PLAINTEXT");
  assert.equal(s.saslMechanism, null);
  assert.deepEqual(s.kafkajs(), {});
  assert.equal(KafkaSecurity.fromEnv({}).describe(), "PLAINTEXT");
});

test("security: SASL names normalized, the password never shown", () => {
  const s = KafkaSecurity.fromValues({
    NODEMETER_KAFKA_SECURITY_PROTOCOL: " sasl_plaintext ", NODEMETER_KAFKA_SASL_MECHANISM: "scram_sha_512",
    NODEMETER_KAFKA_SASL_USERNAME: "meter", NODEMETER_KAFKA_SASL_PASSWORD: SECRET,
  });
  assert.equal(s.protocol, "SASL_PLAINTEXT");
  assert.equal(s.saslMechanism, "SCRAM-SHA-512");
  assert.equal(s.usesTls, false);
  assert.deepEqual(s.kafkajs(), { sasl: { mechanism: "scram-sha-512", username: "meter", password: SECRET } });
  assert.equal(s.describe(), "SASL_PLAINTEXT, SCRAM-SHA-512 as 'meter'");
  for (const shown of [String(s), JSON.stringify(s), inspect(s, { showHidden: true, depth: 5 })]) {
    assert.ok(!shown.includes(SECRET), shown);
  }
  assert.ok(JSON.stringify(s).includes('"saslPassword":"***"'));

  const plain = KafkaSecurity.fromValues({ NODEMETER_KAFKA_SECURITY_PROTOCOL: "SASL_SSL",
    NODEMETER_KAFKA_SASL_USERNAME: "u", NODEMETER_KAFKA_SASL_PASSWORD: SECRET });
  assert.equal(plain.saslMechanism, "PLAIN"); // the default mechanism
  assert.equal(plain.kafkajs().sasl?.mechanism, "plain");
  assert.deepEqual(plain.kafkajs().ssl, { rejectUnauthorized: true, minVersion: "TLSv1.2" }); // Node's trust store
  assert.equal(KafkaSecurity.fromValues({ NODEMETER_KAFKA_SECURITY_PROTOCOL: "SASL_SSL",
    NODEMETER_KAFKA_SASL_MECHANISM: "SCRAM-SHA-256", NODEMETER_KAFKA_SASL_USERNAME: "u",
    NODEMETER_KAFKA_SASL_PASSWORD: SECRET }).kafkajs().sasl?.mechanism, "scram-sha-256");
});

test("security: refusals name the variable, never the password", () => {
  refused(from({ NODEMETER_KAFKA_SECURITY_PROTOCOL: "SASL_SSL" }), "NODEMETER_KAFKA_SASL_USERNAME",
    "NODEMETER_KAFKA_SECURITY_PROTOCOL=SASL_SSL (the environment) needs NODEMETER_KAFKA_SASL_USERNAME and " +
    "NODEMETER_KAFKA_SASL_PASSWORD (or ..._PASSWORD_FILE)");
  refused(from({ NODEMETER_KAFKA_SECURITY_PROTOCOL: "SASL_SSL", NODEMETER_KAFKA_SASL_USERNAME: "u" }),
    "NODEMETER_KAFKA_SASL_PASSWORD", "needs NODEMETER_KAFKA_SASL_PASSWORD (or ..._PASSWORD_FILE)");
  refused(from({ NODEMETER_KAFKA_SECURITY_PROTOCOL: "TLS" }), "NODEMETER_KAFKA_SECURITY_PROTOCOL",
    '"TLS"', "PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL");
  refused(from({ NODEMETER_KAFKA_SECURITY_PROTOCOL: "SASL_PLAINTEXT", NODEMETER_KAFKA_SASL_MECHANISM: "GSSAPI",
    NODEMETER_KAFKA_SASL_USERNAME: "u", NODEMETER_KAFKA_SASL_PASSWORD: SECRET }),
  "NODEMETER_KAFKA_SASL_MECHANISM", "GSSAPI", "PLAIN, SCRAM-SHA-256, SCRAM-SHA-512");
  refused(from({ NODEMETER_KAFKA_SASL_USERNAME: "u", NODEMETER_KAFKA_SASL_PASSWORD: SECRET }),
    "NODEMETER_KAFKA_SASL_USERNAME", "NODEMETER_KAFKA_SASL_USERNAME, NODEMETER_KAFKA_SASL_PASSWORD set",
    "PLAINTEXT uses no SASL");
  refused(from({ NODEMETER_KAFKA_SSL_CHECK_HOSTNAME: "maybe" }), "NODEMETER_KAFKA_SSL_CHECK_HOSTNAME",
    "true or false");
  // in code: the same checks, the same variable names
  refused(() => new KafkaSecurity({ protocol: "SASL_SSL", saslUsername: "u" }), "NODEMETER_KAFKA_SASL_PASSWORD");
  refused(() => new KafkaSecurity({ sslCheckHostname: "no" as never }), "NODEMETER_KAFKA_SSL_CHECK_HOSTNAME");
});

test("security: a password from a file, not both, not empty", () => {
  const dir = tmp();
  try {
    const pw = path.join(dir, "pw");
    fs.writeFileSync(pw, SECRET + "\r\n");
    const base = { NODEMETER_KAFKA_SECURITY_PROTOCOL: "SASL_PLAINTEXT", NODEMETER_KAFKA_SASL_USERNAME: "u",
      NODEMETER_KAFKA_SASL_PASSWORD_FILE: pw };
    assert.equal(KafkaSecurity.fromValues(base).kafkajs().sasl?.password, SECRET);
    refused(from({ ...base, NODEMETER_KAFKA_SASL_PASSWORD: SECRET }), "NODEMETER_KAFKA_SASL_PASSWORD",
      "set NODEMETER_KAFKA_SASL_PASSWORD or NODEMETER_KAFKA_SASL_PASSWORD_FILE (the environment), not both");
    fs.writeFileSync(path.join(dir, "empty"), "\n");
    refused(from({ ...base, NODEMETER_KAFKA_SASL_PASSWORD_FILE: path.join(dir, "empty") }),
      "NODEMETER_KAFKA_SASL_PASSWORD_FILE", "the file is empty");
    refused(from({ ...base, NODEMETER_KAFKA_SASL_PASSWORD_FILE: path.join(dir, "missing") }),
      "NODEMETER_KAFKA_SASL_PASSWORD_FILE", "cannot read it (ENOENT)");
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test("security: NODEMETER_KAFKA_CONFIG (comments, export, quotes); the environment wins", () => {
  const dir = tmp();
  try {
    const file = path.join(dir, "kafka.env");
    fs.writeFileSync(file, "# broker credentials\n\nexport NODEMETER_KAFKA_SECURITY_PROTOCOL=SASL_PLAINTEXT\n" +
      `NODEMETER_KAFKA_SASL_USERNAME = 'file-user'\nNODEMETER_KAFKA_SASL_PASSWORD="${SECRET}"\n` +
      "NODEMETER_KAFKA_SASL_MECHANISM=PLAIN\n");
    const s = KafkaSecurity.fromEnv({ NODEMETER_KAFKA_CONFIG: file, NODEMETER_KAFKA_SASL_MECHANISM: "SCRAM-SHA-256" });
    assert.equal(s.protocol, "SASL_PLAINTEXT");
    assert.equal(s.saslUsername, "file-user");
    assert.equal(s.saslMechanism, "SCRAM-SHA-256");
    assert.equal(s.kafkajs().sasl?.password, SECRET);
    assert.equal(s.origin, `NODEMETER_KAFKA_CONFIG=${file} and the environment`);
    // a refusal says where the values came from
    refused(() => KafkaSecurity.fromEnv({ NODEMETER_KAFKA_CONFIG: file, NODEMETER_KAFKA_SECURITY_PROTOCOL: "SSL" }),
      "NODEMETER_KAFKA_SASL_MECHANISM", `set (NODEMETER_KAFKA_CONFIG=${file} and the environment)`);

    const bad = path.join(dir, "bad.env");
    fs.writeFileSync(bad, `NODEMETER_KAFKA_SECURITY_PROTOCOL=SSL\nNODEMETER_KAFKA_BOOTSTRAP=k:9092\n`);
    refused(() => KafkaSecurity.fromEnv({ NODEMETER_KAFKA_CONFIG: bad }), "NODEMETER_KAFKA_CONFIG",
      "line 2", '"NODEMETER_KAFKA_BOOTSTRAP"', "stay in the environment");
    fs.writeFileSync(bad, `NODEMETER_KAFKA_SASL_PASSWORD=${SECRET}\n${SECRET}\n`);
    refused(() => KafkaSecurity.fromEnv({ NODEMETER_KAFKA_CONFIG: bad }), "NODEMETER_KAFKA_CONFIG",
      "line 2 is not KEY=VALUE");
    refused(() => KafkaSecurity.fromEnv({ NODEMETER_KAFKA_CONFIG: path.join(dir, "missing") }),
      "NODEMETER_KAFKA_CONFIG", "cannot read it");
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

// --- TLS files, made with openssl (the integration tests' broker CA is made the same way) ---

interface Pki { ca: string; cert: string; key: string }

function openssl(dir: string, ...args: string[]): void {
  execFileSync("openssl", args, { cwd: dir, stdio: ["ignore", "ignore", "pipe"] });
}

/** A CA and a certificate for `name` (a DNS name only) signed by it, in `dir`. */
function pki(dir: string, name: string): Pki {
  const p = { ca: path.join(dir, `${name}-ca.pem`), cert: path.join(dir, `${name}.pem`), key: path.join(dir, `${name}.key`) };
  openssl(dir, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout",
    `${name}-ca.key`, "-out", p.ca, "-days", "1", "-subj", `/CN=test CA ${name}`);
  openssl(dir, "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", p.key,
    "-out", `${name}.csr`, "-subj", `/CN=${name}`);
  fs.writeFileSync(path.join(dir, `${name}.ext`), `subjectAltName=DNS:${name}\nextendedKeyUsage=serverAuth,clientAuth\n`);
  openssl(dir, "x509", "-req", "-in", `${name}.csr`, "-CA", p.ca, "-CAkey", `${name}-ca.key`, "-CAcreateserial",
    "-out", p.cert, "-days", "1", "-extfile", `${name}.ext`);
  return p;
}

test("security: TLS files are read and checked when the configuration is", () => {
  const dir = tmp();
  try {
    const p = pki(dir, "broker.test");
    const s = KafkaSecurity.fromValues({
      NODEMETER_KAFKA_SECURITY_PROTOCOL: "SASL_SSL", NODEMETER_KAFKA_SASL_USERNAME: "u",
      NODEMETER_KAFKA_SASL_PASSWORD: SECRET, NODEMETER_KAFKA_SSL_CA_FILE: p.ca,
      NODEMETER_KAFKA_SSL_CERT_FILE: p.cert, NODEMETER_KAFKA_SSL_KEY_FILE: p.key,
      NODEMETER_KAFKA_SSL_CHECK_HOSTNAME: "False",
    });
    assert.ok(s.usesTls && s.usesSasl && !s.sslCheckHostname);
    assert.equal(s.describe(), `SASL_SSL, PLAIN as 'u', CA ${p.ca}, client cert ${p.cert}, hostname not checked`);
    const ssl = s.kafkajs().ssl!;
    assert.deepEqual(ssl.ca, fs.readFileSync(p.ca));
    assert.deepEqual(ssl.key, fs.readFileSync(p.key));
    assert.equal(typeof ssl.checkServerIdentity, "function");
    assert.equal(ssl.rejectUnauthorized, true); // the chain is still verified

    const notPem = path.join(dir, "not.pem");
    fs.writeFileSync(notPem, "hello");
    const ssl1 = (kv: Record<string, string>) => from({ NODEMETER_KAFKA_SECURITY_PROTOCOL: "SSL", ...kv });
    refused(ssl1({ NODEMETER_KAFKA_SSL_CA_FILE: notPem }), "NODEMETER_KAFKA_SSL_CA_FILE", "holds no PEM certificate");
    refused(ssl1({ NODEMETER_KAFKA_SSL_CA_FILE: path.join(dir, "nope") }), "NODEMETER_KAFKA_SSL_CA_FILE",
      "cannot read it (ENOENT)");
    refused(ssl1({ NODEMETER_KAFKA_SSL_CERT_FILE: p.cert }), "NODEMETER_KAFKA_SSL_CERT_FILE", "go together");
    refused(ssl1({ NODEMETER_KAFKA_SSL_CERT_FILE: p.cert, NODEMETER_KAFKA_SSL_KEY_FILE: notPem }),
      "NODEMETER_KAFKA_SSL_CERT_FILE", "not a PEM certificate and its key");
    refused(ssl1({ NODEMETER_KAFKA_SSL_KEY_PASSWORD: SECRET }), "NODEMETER_KAFKA_SSL_KEY_PASSWORD",
      "without NODEMETER_KAFKA_SSL_KEY_FILE");
    refused(from({ NODEMETER_KAFKA_SSL_CA_FILE: p.ca }), "NODEMETER_KAFKA_SSL_CA_FILE", "PLAINTEXT uses no TLS");

    // an encrypted key: read with its password (Node can, unlike Go's standard library)
    const enc = path.join(dir, "enc.key");
    openssl(dir, "pkey", "-in", p.key, "-aes256", "-passout", `pass:${SECRET}`, "-out", enc);
    const encrypted = { NODEMETER_KAFKA_SSL_CERT_FILE: p.cert, NODEMETER_KAFKA_SSL_KEY_FILE: enc };
    refused(ssl1(encrypted), "NODEMETER_KAFKA_SSL_CERT_FILE", "NODEMETER_KAFKA_SSL_KEY_PASSWORD is missing or wrong");
    refused(ssl1({ ...encrypted, NODEMETER_KAFKA_SSL_KEY_PASSWORD: "wrong" }), "NODEMETER_KAFKA_SSL_CERT_FILE",
      "missing or wrong");
    const kp = path.join(dir, "kp");
    fs.writeFileSync(kp, SECRET + "\n");
    const withKey = KafkaSecurity.fromValues({ NODEMETER_KAFKA_SECURITY_PROTOCOL: "SSL", ...encrypted,
      NODEMETER_KAFKA_SSL_KEY_PASSWORD_FILE: kp });
    assert.equal(withKey.kafkajs().ssl?.passphrase, SECRET);
    assert.ok(!inspect(withKey).includes(SECRET) && !JSON.stringify(withKey).includes(SECRET));
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

/** Connects with `s`'s kafkajs ssl options to a TLS server presenting `p`'s certificate as 127.0.0.1. */
async function handshake(s: KafkaSecurity, p: Pki): Promise<Error | null> {
  const server = tls.createServer({ cert: fs.readFileSync(p.cert), key: fs.readFileSync(p.key) }, (c) => c.end());
  server.on("tlsClientError", () => undefined);
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = (server.address() as { port: number }).port;
  try {
    return await new Promise<Error | null>((resolve) => {
      // as kafkajs' socketFactory: { host, port } (no servername for an IP), then its ssl options
      const socket = tls.connect({ host: "127.0.0.1", port, ...s.kafkajs().ssl }, () => {
        socket.end();
        resolve(null);
      });
      socket.on("error", resolve);
    });
  } finally {
    server.close();
  }
}

test("security: NODEMETER_KAFKA_SSL_CHECK_HOSTNAME=false skips the name, never the chain", async () => {
  const dir = tmp();
  try {
    const p = pki(dir, "broker.test");
    const other = pki(dir, "other.test");
    const checked = new KafkaSecurity({ protocol: "SSL", sslCaFile: p.ca });
    const err = await handshake(checked, p);
    assert.ok(err !== null && /altnames|IP/.test(err.message), String(err)); // broker.test is not 127.0.0.1
    assert.equal(await handshake(new KafkaSecurity({ protocol: "SSL", sslCaFile: p.ca, sslCheckHostname: false }), p), null);
    const untrusted = await handshake(new KafkaSecurity({ protocol: "SSL", sslCaFile: other.ca, sslCheckHostname: false }), p);
    assert.ok(untrusted !== null, "another CA's trust must not accept this certificate");
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test("security: a refused login is explained, its password masked; other errors are not", () => {
  const s = new KafkaSecurity({ protocol: "SASL_SSL", saslMechanism: "SCRAM-SHA-512", saslUsername: "alice",
    saslPassword: SECRET });
  const sasl = Object.assign(new Error(`SASL SCRAM SHA512 authentication failed: bad ${SECRET}`),
    { name: "KafkaJSSASLAuthenticationError" });
  const e = s.explain(sasl, ["k1:9096"]);
  assert.ok(e instanceof KafkaSecurityError && e.kind === "auth");
  assert.ok(e.message.startsWith("Kafka authentication failed at k1:9096 (SASL_SSL, SCRAM-SHA-512 as 'alice', " +
    "system CAs): check NODEMETER_KAFKA_SASL_USERNAME ('alice')"), e.message);
  assert.ok(!e.message.includes(SECRET) && e.message.includes("***"), e.message);
  const cert = Object.assign(new Error("Connection error: self-signed certificate in certificate chain"),
    { name: "KafkaJSConnectionError" });
  const t = s.explain(cert, ["k1:9096"]);
  assert.ok(t?.kind === "tls" && t.message.includes("Kafka TLS handshake failed") &&
    t.message.includes("system's trust store"), t?.message);
  assert.equal(s.explain(Object.assign(new Error("Connection error: connect ECONNREFUSED 127.0.0.1:1"),
    { name: "KafkaJSConnectionError" }), ["k"]), undefined);
});

test("KafkaTransport: security from the environment by default, or given in its options", async () => {
  const saved = { ...process.env };
  try {
    process.env.NODEMETER_KAFKA_SECURITY_PROTOCOL = "SASL_SSL";
    process.env.NODEMETER_KAFKA_SASL_USERNAME = "alice";
    delete process.env.NODEMETER_KAFKA_SASL_PASSWORD;
    delete process.env.NODEMETER_KAFKA_SASL_PASSWORD_FILE;
    delete process.env.NODEMETER_KAFKA_CONFIG;
    refused(() => new KafkaTransport({ spoolDir: null }), "NODEMETER_KAFKA_SASL_PASSWORD");
    process.env.NODEMETER_KAFKA_SASL_PASSWORD = SECRET;
    process.env.NODEMETER_KAFKA_SASL_MECHANISM = "SCRAM-SHA-256";
    const fromEnv = new KafkaTransport({ spoolDir: null });
    assert.equal(fromEnv.security.describe(), "SASL_SSL, SCRAM-SHA-256 as 'alice', system CAs");
    await fromEnv.close(100);
    // given in code, the environment is not read
    const given = new KafkaTransport({ spoolDir: null, security: { protocol: "SASL_PLAINTEXT",
      saslMechanism: "SCRAM-SHA-512", saslUsername: "bob", saslPassword: SECRET } });
    assert.equal(given.security.describe(), "SASL_PLAINTEXT, SCRAM-SHA-512 as 'bob'");
    await given.close(100);
    const plaintext = new KafkaTransport({ spoolDir: null, security: {} });
    assert.equal(plaintext.security.protocol, "PLAINTEXT");
    await plaintext.close(100);
    refused(() => new KafkaTransport({ spoolDir: null, security: { protocol: "SSL", saslUsername: "u" } }),
      "NODEMETER_KAFKA_SASL_USERNAME", "(KafkaTransportOptions.security)");
    process.env.NODEMETER_KAFKA_BOOTSTRAP = " , ";
    refused(() => new KafkaTransport({ spoolDir: null, security: {} }), "NODEMETER_KAFKA_BOOTSTRAP", "empty");
  } finally {
    for (const k of Object.keys(process.env)) if (!(k in saved)) delete process.env[k];
    Object.assign(process.env, saved);
  }
});
