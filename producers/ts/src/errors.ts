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

/** Invalid Meter options. */
export class ConfigError extends NodemeterError {
  override name = "ConfigError";
}
