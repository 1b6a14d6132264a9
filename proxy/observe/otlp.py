"""OTLP trace protobuf, written directly: the bytes of ``ExportTraceServiceRequest``.

Made for the ``otel`` exporter's one hot loop. A call becomes nine spans; building them as SDK
span objects and encoding those costs about 400 µs of CPU per call, more than the whole request
path. Here a span is a join of precomputed byte strings: what repeats (stage names, attribute
keys, the attribute block of a model group and key) is encoded once and reused, and only ids,
times and per-call values are written per call. The resource and scope prefix comes from
opentelemetry-proto's own classes, once per exporter. Field numbers are those of
``opentelemetry/proto/trace/v1/trace.proto`` and ``common/v1/common.proto``; the tests decode
what this writes with opentelemetry-proto.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from typing import Any

# Span fields (tag bytes: field number << 3 | wire type)
TRACE_ID = b"\x0a\x10"  # 1: bytes, 16 long
SPAN_ID = b"\x12\x08"  # 2: bytes, 8 long
PARENT_ID = b"\x22\x08"  # 4: bytes, 8 long
NAME = b"\x2a"  # 5: string
KIND = b"\x30"  # 6: enum
ATTRIBUTE = b"\x4a"  # 9: repeated KeyValue
STATUS = b"\x7a"  # 15: Status
#: 16: fixed32 flags = SPAN_FLAGS_CONTEXT_HAS_IS_REMOTE_MASK (the parent, if any, is local)
FLAGS = b"\x85\x01" + struct.pack("<I", 0x100)
TIMES = struct.Struct("<BQBQ")  # 7: fixed64 start, 8: fixed64 end
START_TAG, END_TAG = 0x39, 0x41

KIND_INTERNAL, KIND_SERVER, KIND_CLIENT = 1, 2, 3
STATUS_ERROR = 2
DOUBLE = struct.Struct("<d")

_SMALL = [bytes([n]) for n in range(128)]


def varint(n: int) -> bytes:
    """Base-128 varint; a negative int64 as its 10-byte two's complement, as protobuf writes it."""
    if 0 <= n < 128:
        return _SMALL[n]
    if n < 0:
        n += 1 << 64
    out = bytearray()
    while n >= 128:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def field(tag: bytes, data: bytes) -> bytes:
    """A length-delimited field: tag, length, data."""
    return tag + varint(len(data)) + data


def any_value(value: Any) -> bytes:
    """``AnyValue`` for a str, bool, int, float or a list of those."""
    if isinstance(value, str):
        return field(b"\x0a", value.encode())
    if isinstance(value, bool):
        return b"\x10\x01" if value else b"\x10\x00"
    if isinstance(value, int):
        return b"\x18" + varint(value)
    if isinstance(value, float):
        return b"\x21" + DOUBLE.pack(value)
    if isinstance(value, (list, tuple)):
        return field(b"\x2a", b"".join(field(b"\x0a", any_value(v)) for v in value))
    return field(b"\x0a", str(value).encode())


def key(name: str) -> bytes:
    """An attribute key, encoded once (``KeyValue.key``)."""
    return field(b"\x0a", name.encode())


def key_value(encoded_key: bytes, value: bytes) -> bytes:
    """A span attribute (``Span.attributes``) from an encoded key and an encoded AnyValue."""
    inner = encoded_key + b"\x12" + varint(len(value)) + value
    return ATTRIBUTE + varint(len(inner)) + inner


def int_attribute(encoded_key: bytes, value: int) -> bytes:
    return key_value(encoded_key, b"\x18" + varint(value))


def str_attribute(encoded_key: bytes, value: str) -> bytes:
    data = value.encode()
    return key_value(encoded_key, b"\x0a" + varint(len(data)) + data)


def float_attribute(encoded_key: bytes, value: float) -> bytes:
    return key_value(encoded_key, b"\x21" + DOUBLE.pack(value))


def attribute(name: str, value: Any) -> bytes:
    """One span attribute of any supported type (the typed helpers are for hot paths)."""
    return key_value(key(name), any_value(value))


def attributes(pairs: Iterable[tuple[str, Any]]) -> bytes:
    return b"".join(attribute(k, v) for k, v in pairs)


def status_error(message: str) -> bytes:
    return field(STATUS, field(b"\x12", message.encode()) + b"\x18\x02")


def span(trace_id: bytes, span_id: bytes, parent_id: bytes | None, head: bytes, start: int, end: int,
         attrs: Sequence[bytes] = (), status: bytes = b"") -> bytes:
    """A whole ``Span`` as ``ScopeSpans.spans`` (field 2) holds it.

    ``head`` is the span's name and kind, made once by ``span_head``.
    """
    parts = [TRACE_ID, trace_id, SPAN_ID, span_id]
    if parent_id is not None:
        parts += (PARENT_ID, parent_id)
    parts += (head, TIMES.pack(START_TAG, start, END_TAG, end), *attrs, status, FLAGS)
    body = b"".join(parts)
    return b"\x12" + varint(len(body)) + body


def span_head(name: str, kind: int) -> bytes:
    return field(NAME, name.encode()) + KIND + varint(kind)


def scope_prefix(resource_attributes: dict[str, Any], scope_name: str, scope_version: str) -> tuple[bytes, bytes]:
    """The encoded ``Resource`` and ``InstrumentationScope`` fields, via opentelemetry-proto (once)."""
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, InstrumentationScope, KeyValue
    from opentelemetry.proto.resource.v1.resource_pb2 import Resource

    def pb_value(value: Any) -> AnyValue:
        if isinstance(value, bool):
            return AnyValue(bool_value=value)
        if isinstance(value, int):
            return AnyValue(int_value=value)
        if isinstance(value, float):
            return AnyValue(double_value=value)
        return AnyValue(string_value=str(value))

    resource = Resource(attributes=[KeyValue(key=k, value=pb_value(v)) for k, v in resource_attributes.items()])
    scope = InstrumentationScope(name=scope_name, version=scope_version)
    return field(b"\x0a", resource.SerializeToString()), field(b"\x0a", scope.SerializeToString())


def request(resource: bytes, scope: bytes, spans: Sequence[bytes]) -> bytes:
    """``ExportTraceServiceRequest`` with one ResourceSpans holding one ScopeSpans of ``spans``."""
    scope_spans = scope + b"".join(spans)
    resource_spans = resource + field(b"\x12", scope_spans)
    return field(b"\x0a", resource_spans)
