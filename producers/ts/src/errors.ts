/** nodemeter's errors: one root; `reason` codes are the wire spec's (docs/wire.md). */

export class NodemeterError extends Error {
  override name = "NodemeterError";
}

/** Bad input at the call site; `reason` is the same code the worker dead-letters with. */
export class InvalidUsageError extends NodemeterError {
  override name = "InvalidUsageError";
  readonly reason: string;
  constructor(message: string, reason = "invalid") {
    super(message);
    this.reason = reason;
  }
}

/** A field, a record or its encoding is over a size limit (reason `oversize`). */
export class OversizeEventError extends InvalidUsageError {
  override name = "OversizeEventError";
  constructor(message: string) {
    super(message, "oversize");
  }
}

/** A record could neither be delivered nor spooled. */
export class DeliveryError extends NodemeterError {
  override name = "DeliveryError";
}

/**
 * Invalid Meter or transport options; `variable` names the NODEMETER_* variable (or the
 * option) at fault when there is one. The message never holds a password.
 */
export class ConfigError extends NodemeterError {
  override name = "ConfigError";
  readonly variable: string | undefined;
  constructor(message: string, variable?: string) {
    super(message);
    this.variable = variable;
  }
}

/**
 * The broker refused this client's security settings: `kind` "auth" (SASL credentials or
 * mechanism) or "tls" (the handshake: an untrusted certificate, a host name it does not
 * name). The message names the variables to check, never a password.
 */
export class KafkaSecurityError extends DeliveryError {
  override name = "KafkaSecurityError";
  readonly kind: "auth" | "tls";
  constructor(message: string, kind: "auth" | "tls") {
    super(message);
    this.kind = kind;
  }
}
