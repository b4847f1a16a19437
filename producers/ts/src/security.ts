/**
 * Kafka TLS and SASL: the NODEMETER_KAFKA_* security variables of the Python SDK, the worker
 * and the Go SDK (docs/worker.md, "Kafka security: TLS and SASL"), with their names, their
 * validation and their messages, rendered as kafkajs' `ssl` and `sasl` options.
 *
 *   NODEMETER_KAFKA_SECURITY_PROTOCOL    PLAINTEXT (default), SSL, SASL_PLAINTEXT, SASL_SSL
 *   NODEMETER_KAFKA_SASL_MECHANISM       PLAIN (default with SASL), SCRAM-SHA-256, SCRAM-SHA-512
 *   NODEMETER_KAFKA_SASL_USERNAME        required with SASL
 *   NODEMETER_KAFKA_SASL_PASSWORD(_FILE) one of them, required with SASL
 *   NODEMETER_KAFKA_SSL_CA_FILE          PEM CA bundle (default: Node's trust store)
 *   NODEMETER_KAFKA_SSL_CERT_FILE, _SSL_KEY_FILE      client certificate and key (PEM)
 *   NODEMETER_KAFKA_SSL_KEY_PASSWORD(_FILE)           for an encrypted key
 *   NODEMETER_KAFKA_SSL_CHECK_HOSTNAME   true (default) / false: the chain is checked either way
 *   NODEMETER_KAFKA_CONFIG               a file of KEY=VALUE lines of the variables above
 *
 * Passwords never appear in a message, a String(), JSON or console.log of a KafkaSecurity.
 */
import { X509Certificate } from "node:crypto";
import * as fs from "node:fs";
import * as tls from "node:tls";
import type { SASLOptions } from "kafkajs";
import { ConfigError, KafkaSecurityError } from "./errors";

export const SECURITY_PROTOCOLS = ["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] as const;
export type SecurityProtocol = (typeof SECURITY_PROTOCOLS)[number];
export const SASL_MECHANISMS = ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] as const;
export type SaslMechanism = (typeof SASL_MECHANISMS)[number];
export const KAFKA_CONFIG_VAR = "NODEMETER_KAFKA_CONFIG";

/** The variables, in the order of the Python SDK's KEYS; the `_FILE` ones read a secret from a file. */
export const SECURITY_VARS = [
  "NODEMETER_KAFKA_SECURITY_PROTOCOL", "NODEMETER_KAFKA_SASL_MECHANISM",
  "NODEMETER_KAFKA_SASL_USERNAME", "NODEMETER_KAFKA_SASL_PASSWORD",
  "NODEMETER_KAFKA_SSL_CA_FILE", "NODEMETER_KAFKA_SSL_CERT_FILE", "NODEMETER_KAFKA_SSL_KEY_FILE",
  "NODEMETER_KAFKA_SSL_KEY_PASSWORD", "NODEMETER_KAFKA_SSL_CHECK_HOSTNAME",
  "NODEMETER_KAFKA_SASL_PASSWORD_FILE", "NODEMETER_KAFKA_SSL_KEY_PASSWORD_FILE",
] as const;
const SECRET_FILE_VARS: ReadonlyArray<readonly [string, string]> = [
  ["NODEMETER_KAFKA_SASL_PASSWORD_FILE", "NODEMETER_KAFKA_SASL_PASSWORD"],
  ["NODEMETER_KAFKA_SSL_KEY_PASSWORD_FILE", "NODEMETER_KAFKA_SSL_KEY_PASSWORD"],
];
const TRUE = ["1", "true", "yes", "on"];
const FALSE = ["0", "false", "no", "off", "none"];
const MASK = "***";

/**
 * The security settings in code (KafkaTransportOptions.security): the variables' values
 * under camelCase names, validated as the environment is.
 */
export interface KafkaSecurityOptions {
  /** PLAINTEXT (default), SSL, SASL_PLAINTEXT or SASL_SSL. */
  protocol?: string;
  /** PLAIN (the default with SASL), SCRAM-SHA-256 or SCRAM-SHA-512. */
  saslMechanism?: string;
  saslUsername?: string;
  /** Or saslPasswordFile (its trailing newline dropped); not both. */
  saslPassword?: string;
  saslPasswordFile?: string;
  /** PEM CA bundle the broker's certificate must chain to; default: Node's trust store. */
  sslCaFile?: string;
  /** Client certificate and key (PEM) for mutual TLS: both or neither. */
  sslCertFile?: string;
  sslKeyFile?: string;
  /** For an encrypted key (or sslKeyPasswordFile). */
  sslKeyPassword?: string;
  sslKeyPasswordFile?: string;
  /** Default true; false: the chain is still verified, the host name is not. */
  sslCheckHostname?: boolean;
}

/** kafkajs' `sasl` option for the mechanisms nodemeter takes. */
export type KafkajsSasl = Extract<SASLOptions, { mechanism: "plain" | "scram-sha-256" | "scram-sha-512" }>;

/** kafkajs' `ssl` and `sasl` client options for a KafkaSecurity. */
export interface KafkajsSecurity {
  ssl?: tls.ConnectionOptions;
  sasl?: KafkajsSasl;
}

function where(origin: string): string {
  return origin ? ` (${origin})` : "";
}

function reason(err: unknown): string {
  const e = err as NodeJS.ErrnoException;
  if (typeof e?.code === "string" && e.code.startsWith("E") && e.syscall) return e.code; // ENOENT, EACCES
  return e instanceof Error ? e.message : String(err);
}

function readFile(variable: string, file: string, origin: string): Buffer {
  try {
    return fs.readFileSync(file);
  } catch (err) {
    throw new ConfigError(`${variable}=${file}${where(origin)}: cannot read it (${reason(err)})`, variable);
  }
}

function readSecretFile(variable: string, file: string): string {
  const secret = readFile(variable, file, "").toString("utf8").replace(/[\r\n]+$/, "");
  if (secret === "") throw new ConfigError(`${variable}=${file}: the file is empty`, variable);
  return secret;
}

/**
 * `KEY=VALUE` lines (`#` comments, blank lines, an optional `export`, quotes around a value)
 * of the security variables only. Errors name the file and the line, never a value.
 */
export function readKafkaConfigFile(file: string): Record<string, string> {
  const at = `${KAFKA_CONFIG_VAR}=${file}`;
  let text: string;
  try {
    text = fs.readFileSync(file, "utf8");
  } catch (err) {
    throw new ConfigError(`${at}: cannot read it (${reason(err)})`, KAFKA_CONFIG_VAR);
  }
  const out: Record<string, string> = {};
  text.split(/\r?\n/).forEach((raw, i) => {
    let line = raw.trim();
    if (line === "" || line.startsWith("#")) return;
    if (line.startsWith("export ")) line = line.slice("export ".length).trimStart();
    const eq = line.indexOf("=");
    const key = eq < 0 ? "" : line.slice(0, eq).trim();
    if (key === "") throw new ConfigError(`${at}: line ${i + 1} is not KEY=VALUE`, KAFKA_CONFIG_VAR);
    if (!(SECURITY_VARS as ReadonlyArray<string>).includes(key)) {
      throw new ConfigError(`${at}: line ${i + 1}: unknown key ${JSON.stringify(key)}; the file takes ` +
        `${SECURITY_VARS.join(", ")} (NODEMETER_KAFKA_BOOTSTRAP and the rest stay in the environment)`,
      KAFKA_CONFIG_VAR);
    }
    let value = line.slice(eq + 1).trim();
    if (value.length >= 2 && value[0] === value[value.length - 1] && (value[0] === "'" || value[0] === '"')) {
      value = value.slice(1, -1);
    }
    out[key] = value;
  });
  return out;
}

/** A validated security configuration; build it with fromEnv, fromValues or from options. */
export class KafkaSecurity {
  readonly protocol: SecurityProtocol;
  /** null without SASL. */
  readonly saslMechanism: SaslMechanism | null;
  readonly saslUsername: string | null;
  readonly sslCaFile: string | null;
  readonly sslCertFile: string | null;
  readonly sslKeyFile: string | null;
  readonly sslCheckHostname: boolean;
  /** Where the values came from, for messages ("the environment", a config file). */
  readonly origin: string;
  // true private fields: console.log, util.inspect and JSON.stringify never show them
  readonly #saslPassword: string | null;
  readonly #sslKeyPassword: string | null;
  readonly #ca: Buffer | null = null;
  readonly #cert: Buffer | null = null;
  readonly #key: Buffer | null = null;

  /** Validates `options` (an error names the variable that sets the field at fault). */
  constructor(options: KafkaSecurityOptions = {}, origin = "") {
    const at = where(origin);
    const text = (v: string | undefined): string | null => (v === undefined || v.trim() === "" ? null : v.trim());
    const secret = (v: string | undefined, file: string | undefined, name: string, fileVar: string): string | null => {
      if (text(file) !== null) {
        if (v) throw new ConfigError(`set ${name} or ${fileVar}${at}, not both`, name);
        return readSecretFile(fileVar, text(file)!);
      }
      return v ? v : null; // a secret is taken as given
    };
    this.#saslPassword = secret(options.saslPassword, options.saslPasswordFile,
      "NODEMETER_KAFKA_SASL_PASSWORD", "NODEMETER_KAFKA_SASL_PASSWORD_FILE");
    this.#sslKeyPassword = secret(options.sslKeyPassword, options.sslKeyPasswordFile,
      "NODEMETER_KAFKA_SSL_KEY_PASSWORD", "NODEMETER_KAFKA_SSL_KEY_PASSWORD_FILE");
    this.origin = origin;

    const protocol = (text(options.protocol) ?? "PLAINTEXT").toUpperCase();
    if (!(SECURITY_PROTOCOLS as ReadonlyArray<string>).includes(protocol)) {
      throw new ConfigError(`NODEMETER_KAFKA_SECURITY_PROTOCOL=${JSON.stringify(options.protocol)}${at} is not ` +
        `one of ${SECURITY_PROTOCOLS.join(", ")}`, "NODEMETER_KAFKA_SECURITY_PROTOCOL");
    }
    this.protocol = protocol as SecurityProtocol;
    const mechanism = text(options.saslMechanism)?.toUpperCase().replaceAll("_", "-") ?? null;
    if (mechanism !== null && !(SASL_MECHANISMS as ReadonlyArray<string>).includes(mechanism)) {
      throw new ConfigError(`NODEMETER_KAFKA_SASL_MECHANISM=${JSON.stringify(options.saslMechanism)}${at} is not ` +
        `one of ${SASL_MECHANISMS.join(", ")}`, "NODEMETER_KAFKA_SASL_MECHANISM");
    }
    this.saslUsername = text(options.saslUsername);
    this.sslCaFile = text(options.sslCaFile);
    this.sslCertFile = text(options.sslCertFile);
    this.sslKeyFile = text(options.sslKeyFile);
    const check = options.sslCheckHostname ?? true;
    if (typeof check !== "boolean") {
      throw new ConfigError("NODEMETER_KAFKA_SSL_CHECK_HOSTNAME must be true or false", "NODEMETER_KAFKA_SSL_CHECK_HOSTNAME");
    }
    this.sslCheckHostname = check;

    if (this.usesSasl) {
      this.saslMechanism = (mechanism ?? "PLAIN") as SaslMechanism;
      const missing = [
        ...(this.saslUsername === null ? ["NODEMETER_KAFKA_SASL_USERNAME"] : []),
        ...(this.#saslPassword === null ? ["NODEMETER_KAFKA_SASL_PASSWORD (or ..._PASSWORD_FILE)"] : []),
      ];
      if (missing.length > 0) {
        throw new ConfigError(`NODEMETER_KAFKA_SECURITY_PROTOCOL=${protocol}${at} needs ${missing.join(" and ")}`,
          missing[0]!.split(" ")[0]);
      }
    } else {
      this.saslMechanism = null;
      const given = [
        ...(mechanism !== null ? ["NODEMETER_KAFKA_SASL_MECHANISM"] : []),
        ...(this.saslUsername !== null ? ["NODEMETER_KAFKA_SASL_USERNAME"] : []),
        ...(this.#saslPassword !== null ? ["NODEMETER_KAFKA_SASL_PASSWORD"] : []),
      ];
      if (given.length > 0) {
        throw new ConfigError(`${given.join(", ")} set${at}, but NODEMETER_KAFKA_SECURITY_PROTOCOL=${protocol} ` +
          "uses no SASL (SASL_PLAINTEXT or SASL_SSL do)", given[0]);
      }
    }
    const tlsGiven = [
      ...(this.sslCaFile !== null ? ["NODEMETER_KAFKA_SSL_CA_FILE"] : []),
      ...(this.sslCertFile !== null ? ["NODEMETER_KAFKA_SSL_CERT_FILE"] : []),
      ...(this.sslKeyFile !== null ? ["NODEMETER_KAFKA_SSL_KEY_FILE"] : []),
      ...(this.#sslKeyPassword !== null ? ["NODEMETER_KAFKA_SSL_KEY_PASSWORD"] : []),
    ];
    if (!this.usesTls) {
      if (tlsGiven.length > 0) {
        throw new ConfigError(`${tlsGiven.join(", ")} set${at}, but NODEMETER_KAFKA_SECURITY_PROTOCOL=${protocol} ` +
          "uses no TLS (SSL or SASL_SSL do)", tlsGiven[0]);
      }
      return;
    }
    if ((this.sslCertFile === null) !== (this.sslKeyFile === null)) {
      throw new ConfigError("NODEMETER_KAFKA_SSL_CERT_FILE and NODEMETER_KAFKA_SSL_KEY_FILE go together " +
        `(mutual TLS)${at}: one is set without the other`, "NODEMETER_KAFKA_SSL_CERT_FILE");
    }
    if (this.#sslKeyPassword !== null && this.sslKeyFile === null) {
      throw new ConfigError(`NODEMETER_KAFKA_SSL_KEY_PASSWORD set${at} without NODEMETER_KAFKA_SSL_KEY_FILE`,
        "NODEMETER_KAFKA_SSL_KEY_PASSWORD");
    }
    // read and load the files now: one that is missing or not PEM fails here, naming its variable
    if (this.sslCaFile !== null) {
      const ca = readFile("NODEMETER_KAFKA_SSL_CA_FILE", this.sslCaFile, origin);
      const blocks = ca.toString("latin1").match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? [];
      try {
        if (blocks.length === 0) throw new Error("no BEGIN CERTIFICATE block");
        for (const b of blocks) new X509Certificate(b);
        tls.createSecureContext({ ca });
      } catch (err) {
        throw new ConfigError(`NODEMETER_KAFKA_SSL_CA_FILE=${this.sslCaFile}${at} holds no PEM certificate ` +
          `(${reason(err)})`, "NODEMETER_KAFKA_SSL_CA_FILE");
      }
      this.#ca = ca;
    }
    if (this.sslCertFile !== null && this.sslKeyFile !== null) {
      const cert = readFile("NODEMETER_KAFKA_SSL_CERT_FILE", this.sslCertFile, origin);
      const key = readFile("NODEMETER_KAFKA_SSL_KEY_FILE", this.sslKeyFile, origin);
      try {
        // a passphrase is always given: an encrypted key without one fails, never prompts
        tls.createSecureContext({ cert, key, passphrase: this.#sslKeyPassword ?? "" });
      } catch (err) {
        throw new ConfigError(`NODEMETER_KAFKA_SSL_CERT_FILE=${this.sslCertFile} / NODEMETER_KAFKA_SSL_KEY_FILE=` +
          `${this.sslKeyFile}${at}: not a PEM certificate and its key, or the key is encrypted and ` +
          `NODEMETER_KAFKA_SSL_KEY_PASSWORD is missing or wrong (${this.mask(reason(err))})`,
        "NODEMETER_KAFKA_SSL_CERT_FILE");
      }
      this.#cert = cert;
      this.#key = key;
    }
  }

  /**
   * From the environment (default process.env), over the file NODEMETER_KAFKA_CONFIG names,
   * if any: the environment wins, key by key.
   */
  static fromEnv(env: NodeJS.ProcessEnv = process.env): KafkaSecurity {
    let values: Record<string, string | undefined> = {};
    let origin = "the environment";
    const file = env[KAFKA_CONFIG_VAR]?.trim();
    if (file) {
      values = readKafkaConfigFile(file);
      origin = `${KAFKA_CONFIG_VAR}=${file} and the environment`;
    }
    for (const k of SECURITY_VARS) if (env[k] !== undefined) values[k] = env[k];
    return KafkaSecurity.fromValues(values, origin);
  }

  /** From a map of the variables (other keys are ignored). */
  static fromValues(values: Record<string, string | undefined>, origin = ""): KafkaSecurity {
    const v = (k: (typeof SECURITY_VARS)[number]) => values[k];
    let check: boolean | undefined;
    const flag = v("NODEMETER_KAFKA_SSL_CHECK_HOSTNAME");
    if (flag !== undefined) {
      const f = flag.trim().toLowerCase();
      if (TRUE.includes(f)) check = true;
      else if (FALSE.includes(f)) check = false;
      else if (f !== "") {
        throw new ConfigError(`NODEMETER_KAFKA_SSL_CHECK_HOSTNAME=${JSON.stringify(flag)}${where(origin)} must be ` +
          "true or false", "NODEMETER_KAFKA_SSL_CHECK_HOSTNAME");
      }
    }
    for (const [fileVar, secretVar] of SECRET_FILE_VARS) { // "not both" names the variables
      if (values[fileVar]?.trim() && values[secretVar]) {
        throw new ConfigError(`set ${secretVar} or ${fileVar}${where(origin)}, not both`, secretVar);
      }
    }
    return new KafkaSecurity({
      protocol: v("NODEMETER_KAFKA_SECURITY_PROTOCOL"),
      saslMechanism: v("NODEMETER_KAFKA_SASL_MECHANISM"),
      saslUsername: v("NODEMETER_KAFKA_SASL_USERNAME"),
      saslPassword: v("NODEMETER_KAFKA_SASL_PASSWORD"),
      saslPasswordFile: v("NODEMETER_KAFKA_SASL_PASSWORD_FILE"),
      sslCaFile: v("NODEMETER_KAFKA_SSL_CA_FILE"),
      sslCertFile: v("NODEMETER_KAFKA_SSL_CERT_FILE"),
      sslKeyFile: v("NODEMETER_KAFKA_SSL_KEY_FILE"),
      sslKeyPassword: v("NODEMETER_KAFKA_SSL_KEY_PASSWORD"),
      sslKeyPasswordFile: v("NODEMETER_KAFKA_SSL_KEY_PASSWORD_FILE"),
      sslCheckHostname: check,
    }, origin);
  }

  /** A KafkaSecurity as given, or one built from options. */
  static from(security: KafkaSecurity | KafkaSecurityOptions): KafkaSecurity {
    return security instanceof KafkaSecurity ? security : new KafkaSecurity(security, "KafkaTransportOptions.security");
  }

  get usesSasl(): boolean {
    return this.protocol.startsWith("SASL_");
  }

  get usesTls(): boolean {
    return this.protocol === "SSL" || this.protocol === "SASL_SSL";
  }

  /** How it connects, without secrets: `SASL_SSL, SCRAM-SHA-512 as 'alice', CA /etc/ca.pem`. */
  describe(): string {
    const parts: string[] = [this.protocol];
    if (this.usesSasl) parts.push(`${this.saslMechanism} as '${this.saslUsername}'`);
    if (this.usesTls) {
      parts.push(this.sslCaFile !== null ? `CA ${this.sslCaFile}` : "system CAs");
      if (this.sslCertFile !== null) parts.push(`client cert ${this.sslCertFile}`);
      if (!this.sslCheckHostname) parts.push("hostname not checked");
    }
    return parts.join(", ");
  }

  toString(): string {
    return `KafkaSecurity(${this.describe()})`;
  }

  toJSON(): Record<string, unknown> {
    return {
      protocol: this.protocol, saslMechanism: this.saslMechanism, saslUsername: this.saslUsername,
      saslPassword: this.#saslPassword === null ? null : MASK, sslCaFile: this.sslCaFile,
      sslCertFile: this.sslCertFile, sslKeyFile: this.sslKeyFile,
      sslKeyPassword: this.#sslKeyPassword === null ? null : MASK, sslCheckHostname: this.sslCheckHostname,
    };
  }

  /** kafkajs' `ssl` and `sasl` options (they hold the secrets: pass them to kafkajs only). */
  kafkajs(): KafkajsSecurity {
    const out: KafkajsSecurity = {};
    if (this.usesTls) {
      const ssl: tls.ConnectionOptions = { rejectUnauthorized: true, minVersion: "TLSv1.2" };
      if (this.#ca !== null) ssl.ca = this.#ca;
      if (this.#cert !== null && this.#key !== null) {
        ssl.cert = this.#cert;
        ssl.key = this.#key;
        if (this.#sslKeyPassword !== null) ssl.passphrase = this.#sslKeyPassword;
      }
      // the chain is verified by rejectUnauthorized; only the name check is left out
      if (!this.sslCheckHostname) ssl.checkServerIdentity = () => undefined;
      out.ssl = ssl;
    }
    if (this.usesSasl) {
      const username = this.saslUsername!;
      const password = this.#saslPassword!;
      switch (this.saslMechanism) {
        case "SCRAM-SHA-256": out.sasl = { mechanism: "scram-sha-256", username, password }; break;
        case "SCRAM-SHA-512": out.sasl = { mechanism: "scram-sha-512", username, password }; break;
        default: out.sasl = { mechanism: "plain", username, password };
      }
    }
    return out;
  }

  /** `text` with this configuration's passwords replaced by ***. */
  mask(text: string): string {
    for (const s of [this.#saslPassword, this.#sslKeyPassword]) if (s) text = text.split(s).join(MASK);
    return text;
  }

  /** What to check for a failure of kind "auth" or "tls" (the Python SDK's hints). */
  hints(kind: "auth" | "tls"): string {
    if (kind === "auth") {
      if (!this.usesSasl) return `the broker wants SASL, but NODEMETER_KAFKA_SECURITY_PROTOCOL=${this.protocol}`;
      return `check NODEMETER_KAFKA_SASL_USERNAME ('${this.saslUsername}'), NODEMETER_KAFKA_SASL_PASSWORD / ` +
        `..._PASSWORD_FILE and NODEMETER_KAFKA_SASL_MECHANISM (${this.saslMechanism})`;
    }
    if (!this.usesTls) return `NODEMETER_KAFKA_SECURITY_PROTOCOL=${this.protocol} does not use TLS`;
    const trust = this.sslCaFile !== null ? `NODEMETER_KAFKA_SSL_CA_FILE=${this.sslCaFile}`
      : "the system's trust store (NODEMETER_KAFKA_SSL_CA_FILE not set)";
    return `the broker's certificate must be signed by a CA in ${trust} and name the host in the bootstrap ` +
      `address (NODEMETER_KAFKA_SSL_CHECK_HOSTNAME=${this.sslCheckHostname})`;
  }

  /**
   * A KafkaSecurityError for a kafkajs error that is an authentication or TLS failure
   * (naming the cause and what to check, the passwords masked); undefined for any other.
   */
  explain(err: unknown, brokers: ReadonlyArray<string>): KafkaSecurityError | undefined {
    const kind = failureKind(err);
    if (kind === undefined) return undefined;
    const what = kind === "auth" ? "Kafka authentication failed" : "Kafka TLS handshake failed";
    return new KafkaSecurityError(this.mask(`${what} at ${brokers.join(",")} (${this.describe()}): ` +
      `${this.hints(kind)}. [${errorText(err)}]`), kind);
  }
}

/** The error's message and those of its causes (kafkajs nests them: originalError, cause). */
function errorText(err: unknown): string {
  const seen = new Set<unknown>();
  const parts: string[] = [];
  for (let e = err as { name?: unknown; message?: unknown; originalError?: unknown; cause?: unknown } | undefined;
    e && typeof e === "object" && !seen.has(e) && parts.length < 4;
    e = (e.originalError ?? e.cause) as typeof e) {
    seen.add(e);
    parts.push(`${String(e.name ?? "Error")}: ${String(e.message ?? "")}`);
  }
  return parts.join(" <- ") || String(err);
}

const AUTH = /sasl|authentication failed|invalid username or password|illegal sasl state/i;
const TLS = /certificate|self[- ]signed|altnames|handshake|unable to verify|ssl routines|wrong version number|CERT_|ERR_TLS|ERR_SSL|EPROTO/i;

function failureKind(err: unknown): "auth" | "tls" | undefined {
  const text = errorText(err);
  if (AUTH.test(text)) return TLS.test(text) && /certificate/i.test(text) ? "tls" : "auth";
  if (TLS.test(text)) return "tls";
  return undefined;
}
