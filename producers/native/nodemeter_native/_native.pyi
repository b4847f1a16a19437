from collections.abc import Callable, Iterable, Mapping
from typing import Any

TENANT_PATTERN: str
CUSTOM_PATTERN: str

def configure(
    *,
    usage_event: type,
    meters: type,
    request_end: type,
    status: Iterable[Any],
    gpu_source: Iterable[Any],
    usage_head: bytes,
    end_head: bytes,
    usage_fields: tuple[str, ...],
    meter_fields: tuple[str, ...],
    end_fields: tuple[str, ...],
    limits: Mapping[str, int],
    max_id_len: int,
    max_attributes: int,
    max_attribute_len: int,
    max_custom_meters: int,
    tenant_pattern: str,
    custom_pattern: str,
    slow_validated: Callable[[Any], tuple[bytes, bytes]],
    slow_plain: Callable[[Any], tuple[bytes, bytes]],
) -> None: ...
def validate_encode(record: Any) -> tuple[bytes, bytes]: ...
def encode(record: Any) -> tuple[bytes, bytes]: ...
def try_encode(record: Any) -> tuple[bytes, bytes] | None: ...
def configure_decoder(
    *,
    usage_v1_head: bytes,
    usage_v2_head: bytes,
    latest_usage_version: int,
    slow_decode: Callable[[bytes], Any],
) -> None: ...
def decode_usage_event(data: object) -> Any | None: ...
def decode_valid_usage_event(data: object) -> Any | None: ...
def decode_record(data: object) -> Any: ...
