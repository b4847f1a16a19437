"""nodemeter's exceptions. One root; third-party errors are wrapped with the cause kept.

NodemeterError
├── ConfigError            invalid configuration (raised when a config object is built)
├── InvalidUsageError      bad input at the call site (negative/absurd quantity, missing tenant, ...)
│   └── OversizeEventError an event or its attributes exceed the size limits
├── DecodeError            bytes that are not a nodemeter record (truncated, unknown schema, ...)
│   └── UnknownSchemaError fingerprint or registry id not known
├── BudgetExceededError    a hard budget limit says no (SDK pre-flight check)
├── DeliveryError          a send failed for good and could not be spooled either
├── KafkaConnectionError   no Kafka broker answered in time
│   └── KafkaSecurityError the broker refused the credentials, or the TLS handshake failed
├── RegistryError          the schema registry refused or could not be reached
└── GpuUnavailableError    GPU timing/readings asked for where no GPU, torch or NVML is
"""

from __future__ import annotations


class NodemeterError(Exception):
    """Root of every error nodemeter raises on purpose."""


class ConfigError(NodemeterError, ValueError):
    """A configuration value is invalid."""


class InvalidUsageError(NodemeterError, ValueError):
    """A usage record is invalid; ``reason`` is a short machine-readable code."""

    def __init__(self, message: str, *, reason: str = "invalid") -> None:
        super().__init__(message)
        self.reason = reason


class OversizeEventError(InvalidUsageError):
    def __init__(self, message: str) -> None:
        super().__init__(message, reason="oversize")


class DecodeError(NodemeterError, ValueError):
    def __init__(self, message: str, *, reason: str = "malformed") -> None:
        super().__init__(message)
        self.reason = reason


class UnknownSchemaError(DecodeError):
    def __init__(self, message: str) -> None:
        super().__init__(message, reason="unknown_schema")


class BudgetExceededError(NodemeterError):
    """Raised by the SDK's pre-flight budget check when a hard limit is reached."""


class DeliveryError(NodemeterError):
    """A record could neither be delivered nor spooled."""


class KafkaConnectionError(NodemeterError):
    """No Kafka broker could be used within the time allowed (the message says why)."""


class KafkaSecurityError(KafkaConnectionError):
    """The broker refused the credentials, or the TLS handshake failed (an untrusted
    certificate, a host name it does not match). The message names the cause and the
    ``NODEMETER_KAFKA_*`` variables to check, never a secret."""


class RegistryError(NodemeterError):
    """The Confluent-compatible schema registry refused a schema or could not be reached."""


class GpuUnavailableError(NodemeterError):
    """No GPU reading is possible here; the message says why (no torch, no CUDA, no NVML)."""
