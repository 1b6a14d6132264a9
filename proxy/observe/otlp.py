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

import os
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
START_BYTE, END_BYTE = bytes([START_TAG]), bytes([END_TAG])

KIND_INTERNAL, KIND_SERVER, KIND_CLIENT = 1, 2, 3
STATUS_ERROR = 2
DOUBLE = struct.Struct("<d")

_SMALL = [bytes([n]) for n in range(128)]
#: an all-zero span id means "no span"; a random one that comes out so is replaced by this one
NO_ID, ONE_ID = bytes(8), (1).to_bytes(8, "little")


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

    def attribute(self, value: int) -> bytes:
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

    def attribute(self, value: str) -> bytes:
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

    def attribute(self, value: float) -> bytes:
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


class RandomIds:
    """Random bytes for trace and span ids, drawn from the OS a block at a time.

    ``random.randbytes`` builds a big integer and converts it back to bytes byte by byte; that,
    and the ids unpacked into integers and packed again, was 6,000 instructions a call. A block
    is drawn on first use, never before the worker forks, so no two workers share ids.
    """

    __slots__ = ("block", "offset")

    SIZE = 32 * 1024

    def __init__(self) -> None:
        self.block = b""
        self.offset = 0

    def take(self, size: int) -> tuple[bytes, int]:
        """A block and the offset of ``size`` fresh bytes in it."""
        offset = self.offset
        if offset + size > len(self.block):
            self.block, offset = os.urandom(max(self.SIZE, size)), 0
        self.offset = offset + size
        return self.block, offset


class CallSpans:
    """Every span of one call's shape, its fixed-size fields written by one ``struct`` call.

    A shape is what repeats from call to call of a model group, key and pipeline: the root SERVER
    span's name and attributes, one INTERNAL span per stage and, where the call reached an
    upstream, the CLIENT span. Per call only ids, times and a few attributes change. A span's
    fields are ordered (protobuf reads them in any order) so that the tags ride on bytes the
    call has anyway: the shape's prefix ends with the start time's tag, the trace id is written
    with its own and the span id's tag, the parent id with the end time's. A child span is then
    six values of one ``struct`` pack: prefix, start, trace id, span id, parent id, end. The per-call
    attributes are two byte strings: ``gen_ai`` (the root and the CLIENT span carry it) and
    ``rest`` (the root alone).

    Layout of the bytes, spans in any order as protobuf allows: the root span's length prefix,
    name, kind and attributes, then the packed part (the root's times and ids, every stage span,
    the CLIENT span's head, times and ids), then the CLIENT span's ``gen_ai`` attributes.
    """

    __slots__ = ("_client", "_ids", "_layouts", "_nbytes", "_random", "_root", "_root_prefixes", "_stage_prefixes",
                 "count", "upstream")

    #: the root's fixed fields: flags, start, end, trace id and span id, with their tags
    ROOT_TAIL = len(FLAGS) + TIMES.size + len(TRACE_ID) + 16 + len(SPAN_ID) + 8
    #: a child span's: the root's and the parent id
    CHILD_TAIL = ROOT_TAIL + len(PARENT_ID) + 8
    #: what the root's packed part starts with: its flags and the start time's tag
    ROOT_HEAD = FLAGS + START_BYTE

    def __init__(self, root: bytes, stages: Sequence[bytes | None], client: bytes | None,
                 random_ids: RandomIds) -> None:
        """``root``/``client``: a span's name, kind and constant attributes; ``stages``: those of
        each stage span in pipeline order, ``None`` where the upstream call (the CLIENT span) is;
        ``random_ids``: where ids come from (one source per exporter)."""
        self._root = root
        self._random = random_ids
        self.upstream = stages.index(None) if None in stages else None
        self._client = client if self.upstream is not None else None
        heads = [head for head in stages if head is not None]
        self.count = len(heads)
        spans = 1 + self.count + (self._client is not None)
        self._nbytes = 16 + 8 * spans
        self._ids = struct.Struct("16s" + "8s" * spans).unpack_from
        self._stage_prefixes = [self._prefix(head, 0) for head in heads]
        self._layouts: dict[int, tuple[Any, list[Any]]] = {}
        self._root_prefixes: dict[int, bytes] = {}

    def _prefix(self, head: bytes, attributes: int) -> bytes:
        """A child span up to its start time: length, name, kind, constant attributes, flags and
        the start time's tag (``attributes``: the length of what follows its fixed fields)."""
        return b"\x12" + varint(len(head) + self.CHILD_TAIL + attributes) + head + FLAGS + START_BYTE

    def _layout(self, client_attributes: int) -> tuple[Any, list[Any]]:
        """The struct and argument template for a CLIENT span with attributes this long."""
        # root: flags + start tag, start, end tag, end, trace-id tag + trace id + span-id tag, span id
        fmt = [f"<{len(self.ROOT_HEAD)}sQBQ20s8s"]
        template: list[Any] = [self.ROOT_HEAD, None, END_TAG, None, None, None]
        # child: prefix, start, trace-id tag + trace id + span-id tag, span id, parent id + end tag, end
        for prefix in self._stage_prefixes:
            fmt.append(f"{len(prefix)}sQ20s8s11sQ")
            template += (prefix, None, None, None, None, None)
        if self._client is not None:
            prefix = self._prefix(self._client, client_attributes)
            fmt.append(f"{len(prefix)}sQ20s8s11sQ")
            template += (prefix, None, None, None, None, None)
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

    def encode(self, start: int, end: int, bounds: list[int], gen_ai: bytes, rest: bytes) -> bytes:
        """The call's spans. ``bounds``: where each stage starts (the upstream call included, in
        pipeline order), then where the last one ends."""
        block, offset = self._random.take(self._nbytes)
        trace_id, *ids = self._ids(block, offset)
        if NO_ID in ids:  # an all-zero span id is invalid
            ids = [ONE_ID if i == NO_ID else i for i in ids]
        pack, template = self._layouts.get(len(gen_ai)) or self._layout(len(gen_ai))
        args = template.copy()
        trace = TRACE_ID + trace_id + SPAN_ID
        parent = PARENT_ID + ids[0] + END_BYTE
        args[1], args[3], args[4], args[5] = start, end, trace, ids[0]
        starts, ends = bounds[:-1], bounds[1:]
        upstream = self.upstream
        if upstream is not None:
            args[-5:] = starts.pop(upstream), trace, ids[-1], parent, ends.pop(upstream)
        n = self.count
        if n:
            stop = 6 + 6 * n
            args[7:stop:6] = starts
            args[8:stop:6] = [trace] * n
            args[9:stop:6] = ids[1:n + 1]
            args[10:stop:6] = [parent] * n
            args[11:stop:6] = ends
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
