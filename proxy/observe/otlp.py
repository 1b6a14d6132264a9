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

import random
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


class IntKey:
    """An int attribute's key, with everything before the value encoded once per value length;
    whole attributes of values seen before (token counts, limits) are kept, up to a bound."""

    __slots__ = ("_prefixes", "_seen")

    SEEN = 4096

    def __init__(self, name: str) -> None:
        k = key(name)
        # KeyValue = key, then field 2 (AnyValue = 0x18 + varint): lengths depend on the varint's
        self._prefixes = [b""] + [ATTRIBUTE + varint(len(k) + 3 + n) + k + b"\x12" + bytes([1 + n]) + b"\x18"
                                  for n in range(1, 11)]
        self._seen: dict[int, bytes] = {}

    def __call__(self, value: int) -> bytes:
        found = self._seen.get(value)
        if found is None:
            encoded = varint(value)
            found = self._prefixes[len(encoded)] + encoded
            if len(self._seen) < self.SEEN:
                self._seen[value] = found
        return found


class StrKey:
    """A string attribute's key, with everything before the value encoded once for each length
    of a short value (ids, names); a longer value is encoded in full."""

    __slots__ = ("_key", "_prefixes")

    SHORT = 100

    def __init__(self, name: str) -> None:
        self._key = key(name)
        # the whole attribute for a value of n zero bytes, less those n bytes
        self._prefixes = [str_attribute(self._key, "\0" * n)[:len(str_attribute(self._key, "\0" * n)) - n]
                          for n in range(self.SHORT)]

    def __call__(self, value: str) -> bytes:
        data = value.encode()
        if len(data) < self.SHORT:
            return self._prefixes[len(data)] + data
        return str_attribute(self._key, value)


class FloatKey:
    """A double attribute's key, encoded once with everything before the 8 value bytes."""

    __slots__ = ("_prefix",)

    def __init__(self, name: str) -> None:
        k = key(name)
        self._prefix = ATTRIBUTE + varint(len(k) + 11) + k + b"\x12\x09\x21"

    def __call__(self, value: float) -> bytes:
        return self._prefix + DOUBLE.pack(value)


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

    ``head`` is the span's name and kind, made once by ``span_head``. The fixed-size fields
    come last (protobuf readers take fields in any order), as in ``StageSpan``.
    """
    parts = [head, *attrs, status, FLAGS, TRACE_ID, trace_id, SPAN_ID, span_id]
    if parent_id is not None:
        parts += (PARENT_ID, parent_id)
    parts.append(TIMES.pack(START_TAG, start, END_TAG, end))
    body = b"".join(parts)
    return b"\x12" + varint(len(body)) + body


class CallSpans:
    """Every span of one call's shape, its fixed-size fields written by one ``struct`` call.

    A shape is what repeats from call to call of a model group, key and pipeline: the root SERVER
    span's name and attributes, one INTERNAL span per stage and, where the call reached an
    upstream, the CLIENT span. Per call only ids, times and a few attributes change. The ids and
    times of every span sit in one argument template with the constant bytes between them, so
    a call fills in the slots and packs them at once. The per-call attributes are two byte
    strings: ``gen_ai`` (the root and the CLIENT span carry it) and ``rest`` (the root alone).

    Layout of the bytes, spans in any order as protobuf allows: the root span's length prefix,
    name, kind and attributes, then the packed part (the root's ids and times, every stage span,
    the CLIENT span's head, ids and times), then the CLIENT span's ``gen_ai`` attributes.
    """

    __slots__ = ("_client", "_ids", "_layouts", "_nbytes", "_root", "_root_prefixes", "_stage_items",
                 "count", "upstream")

    #: root tail: FLAGS + trace-id tag, trace id + span-id tag, span id, start, end
    ROOT_TAIL = len(FLAGS) + len(TRACE_ID) + 16 + len(SPAN_ID) + 8 + TIMES.size
    #: a child span's fixed fields: the root tail's and the parent id
    CHILD_TAIL = ROOT_TAIL + len(PARENT_ID) + 8

    def __init__(self, root: bytes, stages: Sequence[bytes | None], client: bytes | None) -> None:
        """``root``/``client``: a span's name, kind and constant attributes; ``stages``: those of
        each stage span in pipeline order, ``None`` where the upstream call (the CLIENT span) is."""
        self._root = root
        self.upstream = stages.index(None) if None in stages else None
        self._client = client if self.upstream is not None else None
        heads = [head for head in stages if head is not None]
        self.count = len(heads)
        spans = 1 + self.count + (self._client is not None)
        self._nbytes = 16 + 8 * spans
        self._ids = struct.Struct(f"<16s{spans}Q").unpack
        self._stage_items = [b"\x12" + varint(len(head) + self.CHILD_TAIL) + head + FLAGS + TRACE_ID for head in heads]
        self._layouts: dict[int, tuple[Any, list[Any]]] = {}
        self._root_prefixes: dict[int, bytes] = {}

    def _layout(self, client_attributes: int) -> tuple[Any, list[Any]]:
        """The struct and argument template for a CLIENT span with attributes this long."""
        fmt = ["<8s18sQBQBQ"]
        template: list[Any] = [FLAGS + TRACE_ID, None, None, START_TAG, None, END_TAG, None]
        for prefix in self._stage_items:
            # prefix, trace id + span-id tag, span id, parent tag + parent id, start, end
            fmt.append(f"{len(prefix)}s18sQ10sBQBQ")
            template += (prefix, None, None, None, START_TAG, None, END_TAG, None)
        if self._client is not None:
            size = len(self._client) + self.CHILD_TAIL + client_attributes
            prefix = b"\x12" + varint(size) + self._client + FLAGS + TRACE_ID
            fmt.append(f"{len(prefix)}s18sQ10sBQBQ")
            template += (prefix, None, None, None, START_TAG, None, END_TAG, None)
        found = (struct.Struct("".join(fmt)).pack, template)
        if len(self._layouts) < 64:
            self._layouts[client_attributes] = found
        return found

    def _root_prefix(self, size: int) -> bytes:
        found = self._root_prefixes.get(size)
        if found is None:
            found = b"\x12" + varint(size) + self._root
            if len(self._root_prefixes) < 256:
                self._root_prefixes[size] = found
        return found

    def encode(self, start: int, end: int, starts: list[int], ends: list[int], gen_ai: bytes, rest: bytes) -> bytes:
        """The call's spans. ``starts``/``ends``: each stage's times (the upstream call's included,
        in pipeline order; the lists are consumed)."""
        trace_id, *ids = self._ids(random.randbytes(self._nbytes))
        if 0 in ids:  # an all-zero span id is invalid
            ids = [i or 1 for i in ids]
        pack, template = self._layouts.get(len(gen_ai)) or self._layout(len(gen_ai))
        args = template.copy()
        ts = trace_id + SPAN_ID
        parent = PARENT_ID + ids[0].to_bytes(8, "little")
        args[1], args[2], args[4], args[6] = ts, ids[0], start, end
        upstream = self.upstream
        if upstream is not None:
            client_start, client_end = starts.pop(upstream), ends.pop(upstream)
            args[-7], args[-6], args[-5], args[-3], args[-1] = ts, ids[-1], parent, client_start, client_end
        n = self.count
        if n:
            stop = 7 + 8 * n
            args[8:stop:8] = [ts] * n
            args[9:stop:8] = ids[1:n + 1]
            args[10:stop:8] = [parent] * n
            args[12:stop:8] = starts
            args[14:stop:8] = ends
        root = self._root_prefix(len(self._root) + len(gen_ai) + len(rest) + self.ROOT_TAIL)
        if upstream is None:
            return b"".join((root, gen_ai, rest, pack(*args)))
        return b"".join((root, gen_ai, rest, pack(*args), gen_ai))


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
    """``ExportTraceServiceRequest`` with one ResourceSpans holding one ScopeSpans of ``spans``.

    Written with one join: a batch is hundreds of kilobytes, and each extra concatenation would
    copy all of it again.
    """
    scope_spans_size = len(scope) + sum(map(len, spans))
    scope_spans_head = b"\x12" + varint(scope_spans_size)
    resource_spans_size = len(resource) + len(scope_spans_head) + scope_spans_size
    return b"".join((b"\x0a", varint(resource_spans_size), resource, scope_spans_head, scope, *spans))
