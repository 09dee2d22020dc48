"""AMF0, the value encoding of RTMP command and data messages.

Decodes what publishers send (`connect`, `publish`, `@setDataFrame`/`onMetaData`, ...) and
encodes our replies (`_result`, `_error`, `onStatus`, ...).

The decoder reads bytes from untrusted peers, so every malformed input raises `ProtocolError`
naming what was wrong and at which offset; nothing else escapes (no IndexError, struct.error,
UnicodeDecodeError, RecursionError), nesting is capped at `MAX_DEPTH` and every length is checked
against the bytes actually present before it is used, so decoding is linear in the input.

Type mapping (decode -> Python, and back):

    number 0x00       <-> float (int encodes as number too; bool does not)
    boolean 0x01      <-> bool
    string 0x02       <-> str (long string 0x0C when over 65535 UTF-8 bytes)
    object 0x03       <-> dict with str keys
    null 0x05         <-> None
    undefined 0x06    <-> UNDEFINED
    reference 0x07     -> the referenced, already decoded object (see `decode_all`)
    ECMA array 0x08   <-> ECMAArray
    strict array 0x0A <-> list (tuples encode as lists)
    date 0x0B         <-> datetime, UTC (naive datetimes encode as UTC)
    unsupported 0x0D   -> None
    XML document 0x0F  -> str
    typed object 0x10  -> dict (the class name is dropped)
    AVM+ 0x11          -> ProtocolError: AMF3 is not supported
"""

from __future__ import annotations

import struct
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from ingest.errors import ProtocolError

__all__ = ["MAX_DEPTH", "UNDEFINED", "ECMAArray", "Undefined", "decode", "decode_all", "encode"]

MAX_DEPTH: Final = 64
"""Containers (objects, arrays) may nest this many levels; one level deeper is refused."""

# A reference repeats an earlier object without repeating its bytes, so a short message can
# describe a structure whose naive walk (logging it, re-encoding it, comparing it) is exponential.
# References are resolved only while the total they add stays under this weight, counted in
# values plus string characters, which bounds such walks by the message size plus this.
_MAX_REFERENCED_WEIGHT: Final = 1 << 20

_NUMBER: Final = 0x00
_BOOLEAN: Final = 0x01
_STRING: Final = 0x02
_OBJECT: Final = 0x03
_MOVIECLIP: Final = 0x04
_NULL: Final = 0x05
_UNDEFINED: Final = 0x06
_REFERENCE: Final = 0x07
_ECMA_ARRAY: Final = 0x08
_OBJECT_END: Final = 0x09
_STRICT_ARRAY: Final = 0x0A
_DATE: Final = 0x0B
_LONG_STRING: Final = 0x0C
_UNSUPPORTED: Final = 0x0D
_RECORDSET: Final = 0x0E
_XML_DOCUMENT: Final = 0x0F
_TYPED_OBJECT: Final = 0x10
_AVMPLUS: Final = 0x11

_unpack_double = struct.Struct(">d").unpack_from
_unpack_u16 = struct.Struct(">H").unpack_from
_unpack_u32 = struct.Struct(">I").unpack_from
_pack_number = struct.Struct(">Bd").pack
_pack_u16 = struct.Struct(">H").pack
_pack_marker_u16 = struct.Struct(">BH").pack
_pack_marker_u32 = struct.Struct(">BI").pack
_pack_date = struct.Struct(">Bdh").pack

_TRUE: Final = b"\x01\x01"
_FALSE: Final = b"\x01\x00"
_NULL_BYTES: Final = b"\x05"
_UNDEFINED_BYTES: Final = b"\x06"
_END_OF_PAIRS: Final = b"\x00\x00\x09"

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MS: Final = timedelta(milliseconds=1)


class Undefined:
    """The type of `UNDEFINED`, AMF0's undefined value; distinct from null (`None`)."""

    __slots__ = ()
    _instance: Undefined | None = None

    def __new__(cls) -> Undefined:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "UNDEFINED"

    def __bool__(self) -> bool:
        return False

    def __reduce__(self) -> str:
        # Pickling and copying must hand back the singleton so `is UNDEFINED` keeps working.
        return "UNDEFINED"


UNDEFINED: Final = Undefined()


class ECMAArray(dict[str, Any]):
    """A dict that encodes as an AMF0 ECMA array (what `onMetaData` carries), not an object."""

    __slots__ = ()

    def __repr__(self) -> str:
        return f"ECMAArray({dict.__repr__(self)})"


# ---------------------------------------------------------------------------------------------
# Decoding


class _Context:
    """The state one decode shares across values: the reference table and its accounting."""

    __slots__ = ("referenced_weight", "table", "weights")

    def __init__(self) -> None:
        # Complex values in the order they started, as AMF0 numbers them for references; an
        # entry is `_OPEN` until its value is complete, so references cannot build cycles.
        self.table: list[Any] = []
        self.weights: dict[int, tuple[int, int]] = {}
        self.referenced_weight = 0


_OPEN: Final = object()


def _view(data: bytes | bytearray | memoryview) -> memoryview:
    view = memoryview(data)
    # Indexing must yield ints 0-255 and offsets must count bytes, whatever the caller's view.
    if view.format != "B" or view.ndim != 1:
        view = view.cast("B")
    return view


def _truncated(what: str, at: int, need: int, end: int) -> ProtocolError:
    left = max(end - at, 0)
    return ProtocolError(
        f"truncated AMF0 {what} at offset {at}: needs {need} bytes, only {left} left"
    )


def _utf8(view: memoryview, start: int, stop: int, what: str) -> str:
    try:
        return str(view[start:stop], "utf-8")
    except UnicodeDecodeError as exc:
        raise ProtocolError(
            f"invalid UTF-8 in AMF0 {what} at offset {start + exc.start} ({exc.reason})"
        ) from None


def _read_short_string(view: memoryview, pos: int, end: int, what: str) -> tuple[str, int]:
    if pos + 2 > end:
        raise _truncated(f"{what} length", pos, 2, end)
    stop = pos + 2 + _unpack_u16(view, pos)[0]
    if stop > end:
        raise _truncated(what, pos, stop - pos, end)
    return _utf8(view, pos + 2, stop, what), stop


def _read_value(view: memoryview, pos: int, end: int, depth: int, ctx: _Context) -> tuple[Any, int]:
    """One value at `pos`, `depth` containers deep; returns (value, offset after it)."""
    if pos >= end:
        raise _truncated("type marker", pos, 1, end)
    marker = view[pos]
    start = pos
    pos += 1
    # Ordered by how often publishers send each type.
    if marker == _STRING:
        if pos + 2 > end:
            raise _truncated("string length", pos, 2, end)
        stop = pos + 2 + _unpack_u16(view, pos)[0]
        if stop > end:
            raise _truncated("string", start, stop - start, end)
        return _utf8(view, pos + 2, stop, "string"), stop
    if marker == _NUMBER:
        if pos + 8 > end:
            raise _truncated("number", start, 9, end)
        return _unpack_double(view, pos)[0], pos + 8
    if marker == _OBJECT:
        return _read_pairs(view, pos, end, depth + 1, ctx, {}, start, "object")
    if marker == _BOOLEAN:
        if pos >= end:
            raise _truncated("boolean", start, 2, end)
        return view[pos] != 0, pos + 1
    if marker == _NULL:
        return None, pos
    if marker == _ECMA_ARRAY:
        # Encoders in the wild write wrong counts (zero, or the count before filtering), and
        # every reader that matters goes by the object-end marker, so the count is skipped.
        if pos + 4 > end:
            raise _truncated("ECMA array count", pos, 4, end)
        return _read_pairs(view, pos + 4, end, depth + 1, ctx, ECMAArray(), start, "ECMA array")
    if marker == _UNDEFINED:
        return UNDEFINED, pos
    if marker == _STRICT_ARRAY:
        return _read_strict_array(view, pos, end, depth + 1, ctx, start)
    if marker in (_LONG_STRING, _XML_DOCUMENT):
        what = "long string" if marker == _LONG_STRING else "XML document"
        if pos + 4 > end:
            raise _truncated(f"{what} length", pos, 4, end)
        stop = pos + 4 + _unpack_u32(view, pos)[0]
        if stop > end:
            raise _truncated(what, start, stop - start, end)
        return _utf8(view, pos + 4, stop, what), stop
    if marker == _DATE:
        return _read_date(view, pos, end, start)
    if marker == _TYPED_OBJECT:
        _class_name, pos = _read_short_string(view, pos, end, "typed object class name")
        return _read_pairs(view, pos, end, depth + 1, ctx, {}, start, "typed object")
    if marker == _REFERENCE:
        return _read_reference(view, pos, end, depth, ctx, start)
    if marker == _UNSUPPORTED:
        return None, pos
    if marker == _AVMPLUS:
        raise ProtocolError(f"AMF3 is not supported (AVM+ switch marker at offset {start})")
    if marker == _OBJECT_END:
        raise ProtocolError(f"AMF0 object-end marker outside an object at offset {start}")
    if marker in (_MOVIECLIP, _RECORDSET):
        raise ProtocolError(f"reserved AMF0 type marker 0x{marker:02x} at offset {start}")
    raise ProtocolError(f"unknown AMF0 type marker 0x{marker:02x} at offset {start}")


def _too_deep(what: str, at: int) -> ProtocolError:
    return ProtocolError(f"AMF0 {what} at offset {at} nests deeper than {MAX_DEPTH} levels")


def _read_pairs(
    view: memoryview,
    pos: int,
    end: int,
    depth: int,
    ctx: _Context,
    result: dict[str, Any],
    start: int,
    what: str,
) -> tuple[dict[str, Any], int]:
    """Key/value pairs up to the object-end marker, into `result` (object, ECMA or typed)."""
    if depth > MAX_DEPTH:
        raise _too_deep(what, start)
    table = ctx.table
    index = len(table)
    table.append(_OPEN)
    while True:
        if pos + 2 > end:
            raise _truncated(f"{what} key length", pos, 2, end)
        key_stop = pos + 2 + _unpack_u16(view, pos)[0]
        if key_stop == pos + 2:
            # An empty key ends the pairs only when the object-end marker follows; otherwise it
            # is an ordinary (if odd) property named "", which some encoders do send.
            if key_stop >= end:
                raise _truncated(f"{what} end marker", key_stop, 1, end)
            if view[key_stop] == _OBJECT_END:
                table[index] = result
                return result, key_stop + 1
            key = ""
        else:
            if key_stop > end:
                raise _truncated(f"{what} key", pos, key_stop - pos, end)
            key = _utf8(view, pos + 2, key_stop, f"{what} key")
        result[key], pos = _read_value(view, key_stop, end, depth, ctx)


def _read_strict_array(
    view: memoryview, pos: int, end: int, depth: int, ctx: _Context, start: int
) -> tuple[list[Any], int]:
    if depth > MAX_DEPTH:
        raise _too_deep("strict array", start)
    if pos + 4 > end:
        raise _truncated("strict array count", pos, 4, end)
    count = _unpack_u32(view, pos)[0]
    pos += 4
    # Every element takes at least its marker byte, so a count beyond the bytes left is a lie;
    # refusing it up front gives a clear message instead of a late truncation.
    if count > end - pos:
        raise ProtocolError(
            f"AMF0 strict array at offset {start} claims {count} elements "
            f"but only {end - pos} bytes follow"
        )
    table = ctx.table
    index = len(table)
    table.append(_OPEN)
    result: list[Any] = []
    append = result.append
    for _ in range(count):
        value, pos = _read_value(view, pos, end, depth, ctx)
        append(value)
    table[index] = result
    return result, pos


def _read_date(view: memoryview, pos: int, end: int, start: int) -> tuple[datetime, int]:
    if pos + 10 > end:
        raise _truncated("date", start, 11, end)
    millis = _unpack_double(view, pos)[0]
    # The trailing 16-bit time zone is ignored: AMF0 says it is reserved and should be zero.
    try:
        return _EPOCH + timedelta(milliseconds=millis), pos + 10
    except (OverflowError, ValueError):
        raise ProtocolError(
            f"AMF0 date at offset {start} is out of range ({millis!r} ms since the epoch)"
        ) from None


def _read_reference(
    view: memoryview, pos: int, end: int, depth: int, ctx: _Context, start: int
) -> tuple[Any, int]:
    if pos + 2 > end:
        raise _truncated("reference", start, 3, end)
    index = _unpack_u16(view, pos)[0]
    table = ctx.table
    if index >= len(table):
        raise ProtocolError(
            f"AMF0 reference at offset {start} points to object {index}, "
            f"but only {len(table)} came before it"
        )
    target = table[index]
    if target is _OPEN:
        raise ProtocolError(
            f"AMF0 reference at offset {start} points to object {index}, which encloses it"
        )
    weight, height = _expanded(target, ctx.weights)
    if depth + height > MAX_DEPTH:
        raise ProtocolError(
            f"AMF0 reference at offset {start} would nest deeper than {MAX_DEPTH} levels"
        )
    ctx.referenced_weight += weight
    if ctx.referenced_weight > _MAX_REFERENCED_WEIGHT:
        raise ProtocolError(
            f"AMF0 reference at offset {start} expands the message beyond the limit "
            f"of {_MAX_REFERENCED_WEIGHT} values and characters shared by reference"
        )
    return target, pos + 2


def _expanded(
    value: dict[str, Any] | list[Any], memo: dict[int, tuple[int, int]]
) -> tuple[int, int]:
    """(weight, height) of a decoded container as if its shared parts were copied.

    Memoised by identity, so it costs one pass over distinct containers however much they are
    shared; the height is at most MAX_DEPTH because every reference was checked when read.
    """
    identity = id(value)
    known = memo.get(identity)
    if known is not None:
        return known
    weight = 1
    height = 0
    for child in value.values() if isinstance(value, dict) else value:
        if isinstance(child, (dict, list)):
            child_weight, child_height = _expanded(child, memo)
            weight += child_weight
            height = max(height, child_height)
        elif isinstance(child, str):
            weight += 1 + len(child)
        else:
            weight += 1
    if isinstance(value, dict):
        weight += sum(len(name) for name in value)
    memo[identity] = (weight, height + 1)
    return weight, height + 1


def decode(data: bytes | bytearray | memoryview, offset: int = 0) -> tuple[Any, int]:
    """Decode the one value at `offset`; returns it and the offset just after it.

    References resolve only within this one value; use `decode_all` for a whole message.
    Raises ProtocolError on any malformed or truncated input, ValueError on a bad `offset`.
    """
    view = _view(data)
    if not 0 <= offset <= len(view):
        raise ValueError(f"offset {offset} is outside the {len(view)}-byte buffer")
    return _read_value(view, offset, len(view), 0, _Context())


def decode_all(data: bytes | bytearray | memoryview) -> list[Any]:
    """Decode every value in `data` (one RTMP command or data message body), in order.

    The values share one reference table, as they do in an AMF0 message. Raises ProtocolError
    on any malformed or truncated input; an empty buffer gives an empty list.
    """
    view = _view(data)
    end = len(view)
    ctx = _Context()
    values: list[Any] = []
    pos = 0
    while pos < end:
        value, pos = _read_value(view, pos, end, 0, ctx)
        values.append(value)
    return values


# ---------------------------------------------------------------------------------------------
# Encoding


def _encode_str(value: str, out: list[bytes]) -> None:
    raw = value.encode("utf-8")
    size = len(raw)
    if size <= 0xFFFF:
        out.append(_pack_marker_u16(_STRING, size))
    elif size <= 0xFFFFFFFF:
        out.append(_pack_marker_u32(_LONG_STRING, size))
    else:
        raise ValueError(f"string of {size} bytes is too long for AMF0")
    out.append(raw)


def _encode_pairs(value: dict[Any, Any], out: list[bytes], depth: int) -> None:
    for key, item in value.items():
        if not isinstance(key, str):
            raise TypeError(f"AMF0 object keys must be str, not {type(key).__name__}: {key!r}")
        raw = key.encode("utf-8")
        if len(raw) > 0xFFFF:
            raise ValueError(f"AMF0 object key of {len(raw)} bytes is over 65535")
        out.append(_pack_u16(len(raw)))
        out.append(raw)
        _encode_value(item, out, depth)
    out.append(_END_OF_PAIRS)


def _encode_value(value: Any, out: list[bytes], depth: int) -> None:
    kind = type(value)
    # Exact-type checks first for speed; the isinstance branches below catch subclasses.
    if kind is str:
        _encode_str(value, out)
    elif kind is float:
        out.append(_pack_number(_NUMBER, value))
    elif value is None:
        out.append(_NULL_BYTES)
    elif isinstance(value, bool):
        out.append(_TRUE if value else _FALSE)
    elif isinstance(value, int):
        try:
            out.append(_pack_number(_NUMBER, float(value)))
        except OverflowError:
            raise ValueError(f"integer {value} is too large for an AMF0 number") from None
    elif isinstance(value, float):
        out.append(_pack_number(_NUMBER, value))
    elif isinstance(value, str):
        _encode_str(value, out)
    elif isinstance(value, dict):
        if depth >= MAX_DEPTH:
            raise ValueError(f"value nests deeper than {MAX_DEPTH} levels (a cycle?)")
        if isinstance(value, ECMAArray):
            out.append(_pack_marker_u32(_ECMA_ARRAY, len(value)))
        else:
            out.append(b"\x03")
        _encode_pairs(value, out, depth + 1)
    elif isinstance(value, (list, tuple)):
        if depth >= MAX_DEPTH:
            raise ValueError(f"value nests deeper than {MAX_DEPTH} levels (a cycle?)")
        out.append(_pack_marker_u32(_STRICT_ARRAY, len(value)))
        for item in value:
            _encode_value(item, out, depth + 1)
    elif value is UNDEFINED:
        out.append(_UNDEFINED_BYTES)
    elif isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        out.append(_pack_date(_DATE, (value - _EPOCH) / _ONE_MS, 0))
    else:
        raise TypeError(f"cannot encode {kind.__name__} as AMF0: {value!r}")


def encode(*values: Any) -> bytes:
    """The AMF0 encodings of `values`, concatenated (an RTMP command or data message body).

    Raises TypeError for a value (or object key) of a type AMF0 has no mapping for, and
    ValueError for one that does not fit (nesting over MAX_DEPTH, an int beyond a double).
    """
    out: list[bytes] = []
    for value in values:
        _encode_value(value, out, 0)
    return b"".join(out)
