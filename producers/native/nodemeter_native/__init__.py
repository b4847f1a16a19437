"""Compiled fast path of the nodemeter SDK (Rust, pyo3): see ``nodemeter.fastcodec``.

Not meant to be used directly: ``nodemeter.fastcodec`` configures it at import
with the SDK's classes, schema fingerprints and limits, and falls back to the
pure-Python encoder (and decoder) when it is not installed.
"""

from nodemeter_native._native import (
    CUSTOM_PATTERN,
    TENANT_PATTERN,
    configure,
    configure_decoder,
    decode_record,
    decode_usage_event,
    decode_valid_usage_event,
    encode,
    try_encode,
    validate_encode,
)

__all__ = [
    "CUSTOM_PATTERN",
    "TENANT_PATTERN",
    "configure",
    "configure_decoder",
    "decode_record",
    "decode_usage_event",
    "decode_valid_usage_event",
    "encode",
    "try_encode",
    "validate_encode",
]
