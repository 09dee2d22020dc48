"""The AMF0 codec: byte vectors from real publishers, round trips, and hostile input."""

from __future__ import annotations

import copy
import math
import pickle
import struct
import time
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from ingest.amf0 import MAX_DEPTH, UNDEFINED, ECMAArray, Undefined, decode, decode_all, encode
from ingest.errors import ProtocolError
from ingest.limits import SHOWN_CHARS, shown
from tests.utils.rtmp_attacks import amf0_bomb

# Byte builders written independently of the encoder, so the vectors check it rather than echo it.


def num(value: float) -> bytes:
    return b"\x00" + struct.pack(">d", value)


def boolean(value: bool) -> bytes:
    return b"\x01\x01" if value else b"\x01\x00"


def string(value: str) -> bytes:
    raw = value.encode()
    return b"\x02" + struct.pack(">H", len(raw)) + raw


def key(name: str) -> bytes:
    raw = name.encode()
    return struct.pack(">H", len(raw)) + raw


END = b"\x00\x00\x09"


def obj(*pairs: tuple[str, bytes]) -> bytes:
    return b"\x03" + b"".join(key(k) + v for k, v in pairs) + END


def ecma(*pairs: tuple[str, bytes], count: int | None = None) -> bytes:
    n = len(pairs) if count is None else count
    return b"\x08" + struct.pack(">I", n) + b"".join(key(k) + v for k, v in pairs) + END


def strict(*items: bytes) -> bytes:
    return b"\x0a" + struct.pack(">I", len(items)) + b"".join(items)


def ref(index: int) -> bytes:
    return b"\x07" + struct.pack(">H", index)


def same(a: Any, b: Any) -> bool:
    """Equal, and of the same types all the way down (ECMAArray == dict would pass otherwise)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return a == b


# ---------------------------------------------------------------------------------------------
# Known vectors


CONNECT_BYTES = (
    b"\x02\x00\x07connect"
    b"\x00\x3f\xf0\x00\x00\x00\x00\x00\x00"
    b"\x03"
    b"\x00\x03app\x02\x00\x04live"
    b"\x00\x04type\x02\x00\x0anonprivate"
    b"\x00\x05tcUrl\x02\x00\x1artmp://127.0.0.1:1935/live"
    b"\x00\x00\x09"
)
CONNECT_VALUES = [
    "connect",
    1.0,
    {"app": "live", "type": "nonprivate", "tcUrl": "rtmp://127.0.0.1:1935/live"},
]


def test_encode_connect_matches_hand_written_bytes() -> None:
    assert encode(*CONNECT_VALUES) == CONNECT_BYTES


def test_decode_connect_hand_written_bytes() -> None:
    assert decode_all(CONNECT_BYTES) == CONNECT_VALUES
    value, offset = decode(CONNECT_BYTES)
    assert (value, offset) == ("connect", 10)
    value, offset = decode(CONNECT_BYTES, offset)
    assert (value, offset) == (1.0, 19)
    value, offset = decode(CONNECT_BYTES, offset)
    assert value == CONNECT_VALUES[2]
    assert offset == len(CONNECT_BYTES)


FFMPEG_CONNECT = (
    string("connect")
    + num(1)
    + obj(
        ("app", string("live")),
        ("flashVer", string("FMLE/3.0 (compatible; Lavf61.1.100)")),
        ("tcUrl", string("rtmp://127.0.0.1:1935/live")),
        ("fpad", boolean(False)),
        ("capabilities", num(15.0)),
        ("audioCodecs", num(4071.0)),
        ("videoCodecs", num(252.0)),
        ("videoFunction", num(1.0)),
    )
)

FFMPEG_METADATA = (
    string("@setDataFrame")
    + string("onMetaData")
    + ecma(
        ("duration", num(0)),
        ("width", num(1280)),
        ("height", num(720)),
        ("videodatarate", num(2500)),
        ("framerate", num(30)),
        ("videocodecid", num(7)),
        ("audiodatarate", num(128)),
        ("audiosamplerate", num(48000)),
        ("audiosamplesize", num(16)),
        ("stereo", boolean(True)),
        ("audiocodecid", num(10)),
        ("encoder", string("Lavf61.1.100")),
        ("filesize", num(0)),
    )
)


def test_ffmpeg_connect_command() -> None:
    values = decode_all(FFMPEG_CONNECT)
    assert values == [
        "connect",
        1.0,
        {
            "app": "live",
            "flashVer": "FMLE/3.0 (compatible; Lavf61.1.100)",
            "tcUrl": "rtmp://127.0.0.1:1935/live",
            "fpad": False,
            "capabilities": 15.0,
            "audioCodecs": 4071.0,
            "videoCodecs": 252.0,
            "videoFunction": 1.0,
        },
    ]
    assert type(values[2]) is dict
    assert values[2]["fpad"] is False
    assert encode("connect", 1, values[2]) == FFMPEG_CONNECT


def test_ffmpeg_set_data_frame_on_metadata() -> None:
    command, name, meta = decode_all(FFMPEG_METADATA)
    assert (command, name) == ("@setDataFrame", "onMetaData")
    assert type(meta) is ECMAArray
    assert meta == {
        "duration": 0.0,
        "width": 1280.0,
        "height": 720.0,
        "videodatarate": 2500.0,
        "framerate": 30.0,
        "videocodecid": 7.0,
        "audiodatarate": 128.0,
        "audiosamplerate": 48000.0,
        "audiosamplesize": 16.0,
        "stereo": True,
        "audiocodecid": 10.0,
        "encoder": "Lavf61.1.100",
        "filesize": 0.0,
    }
    assert list(meta)[:3] == ["duration", "width", "height"]
    assert encode(command, name, meta) == FFMPEG_METADATA


def test_publisher_command_sequence() -> None:
    """The other commands a publisher sends, each with its transaction id and a null."""
    message = (
        string("releaseStream")
        + num(2)
        + b"\x05"
        + string("key")
        + string("FCPublish")
        + num(3)
        + b"\x05"
        + string("key")
        + string("createStream")
        + num(4)
        + b"\x05"
        + string("publish")
        + num(5)
        + b"\x05"
        + string("key")
        + string("live")
    )
    assert decode_all(message) == [
        *("releaseStream", 2.0, None, "key"),
        *("FCPublish", 3.0, None, "key"),
        *("createStream", 4.0, None),
        *("publish", 5.0, None, "key", "live"),
    ]


def test_encode_replies() -> None:
    assert encode("_result", 4, None, 1) == string("_result") + num(4) + b"\x05" + num(1)
    status = {
        "level": "status",
        "code": "NetStream.Publish.Start",
        "description": "key is now published",
    }
    assert encode("onStatus", 0, None, status) == (
        string("onStatus")
        + num(0)
        + b"\x05"
        + obj(
            ("level", string("status")),
            ("code", string("NetStream.Publish.Start")),
            ("description", string("key is now published")),
        )
    )


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0.0, b"\x00" + bytes(8)),
        (1.5, b"\x00\x3f\xf8\x00\x00\x00\x00\x00\x00"),
        (7, b"\x00\x40\x1c\x00\x00\x00\x00\x00\x00"),
        (True, b"\x01\x01"),
        (False, b"\x01\x00"),
        ("", b"\x02\x00\x00"),
        ("é", b"\x02\x00\x02\xc3\xa9"),
        (None, b"\x05"),
        (UNDEFINED, b"\x06"),
        ({}, b"\x03\x00\x00\x09"),
        (ECMAArray(), b"\x08\x00\x00\x00\x00\x00\x00\x09"),
        (ECMAArray(a=1.0), b"\x08\x00\x00\x00\x01\x00\x01a" + num(1) + END),
        ([], b"\x0a\x00\x00\x00\x00"),
        ([None, "a"], b"\x0a\x00\x00\x00\x02\x05\x02\x00\x01a"),
        ((1, 2), strict(num(1), num(2))),
    ],
)
def test_scalar_and_container_vectors(value: Any, expected: bytes) -> None:
    assert encode(value) == expected
    decoded = decode_all(expected)
    assert decoded == [list(value) if isinstance(value, tuple) else value]


def test_bool_is_not_a_number_and_int_is() -> None:
    assert encode(True, 1) == b"\x01\x01" + num(1.0)
    assert decode_all(encode(True, 1)) == [True, 1.0]
    assert type(decode_all(encode(1))[0]) is float


def test_long_strings_switch_at_65536_bytes() -> None:
    short = "a" * 0xFFFF
    assert encode(short)[:3] == b"\x02\xff\xff"
    long = "a" * 0x10000
    assert encode(long)[:5] == b"\x0c\x00\x01\x00\x00"
    multibyte = "é" * 0x8000  # 65536 UTF-8 bytes from 32768 characters
    assert encode(multibyte)[:5] == b"\x0c\x00\x01\x00\x00"
    assert decode_all(encode(short, long, multibyte)) == [short, long, multibyte]
    assert decode_all(b"\x0c\x00\x00\x00\x02hi") == ["hi"]


def test_dates() -> None:
    when = datetime(2024, 5, 6, 7, 8, 9, 123000, tzinfo=UTC)
    millis = (when - datetime(1970, 1, 1, tzinfo=UTC)) / timedelta(milliseconds=1)
    encoded = encode(when)
    assert encoded == b"\x0b" + struct.pack(">d", millis) + b"\x00\x00"
    assert decode_all(encoded) == [when]
    assert decode_all(encoded)[0].tzinfo is UTC
    # The time-zone field is reserved: ignored on the way in.
    assert decode_all(encoded[:-2] + b"\xff\x88") == [when]
    # Naive datetimes are taken as UTC; other zones become the same instant in UTC.
    assert decode_all(encode(when.replace(tzinfo=None))) == [when]
    paris = when.astimezone(timezone(timedelta(hours=2)))
    assert decode_all(encode(paris)) == [when]


@pytest.mark.parametrize("millis", [math.nan, math.inf, -math.inf, 1e300, -1e20])
def test_out_of_range_dates_are_protocol_errors(millis: float) -> None:
    with pytest.raises(ProtocolError, match=r"date at offset 3 is out of range"):
        decode_all(string("") + b"\x0b" + struct.pack(">d", millis) + b"\x00\x00")


def test_rarely_sent_types() -> None:
    assert decode_all(b"\x0d") == [None]  # unsupported
    xml = "<a>é</a>".encode()
    assert decode_all(b"\x0f" + struct.pack(">I", len(xml)) + xml) == ["<a>é</a>"]
    typed = b"\x10" + key("flash.Thing") + key("x") + num(1) + key("y") + string("z") + END
    assert decode_all(typed) == [{"x": 1.0, "y": "z"}]
    assert type(decode_all(typed)[0]) is dict


def test_empty_key_is_a_property_unless_object_end_follows() -> None:
    assert decode_all(b"\x03" + key("") + b"\x05" + END) == [{"": None}]
    assert decode_all(encode({"": 1.0, "a": {"": ""}})) == [{"": 1.0, "a": {"": ""}}]


@pytest.mark.parametrize("count", [0, 1, 2, 1000, 0xFFFFFFFF])
def test_ecma_array_count_is_ignored_in_favour_of_the_end_marker(count: int) -> None:
    data = ecma(("a", num(1)), ("b", string("x")), count=count) + string("after")
    decoded = decode_all(data)
    assert decoded == [{"a": 1.0, "b": "x"}, "after"]
    assert type(decoded[0]) is ECMAArray


def test_decode_accepts_bytes_like_and_offsets() -> None:
    data = encode("a", 2.0, {"k": [1.0]})
    expected = ["a", 2.0, {"k": [1.0]}]
    assert decode_all(bytearray(data)) == expected
    assert decode_all(memoryview(b"junk" + data)[4:]) == expected
    assert decode_all(memoryview(data).cast("c")) == expected
    assert decode_all(b"") == []
    assert decode(b"xx" + data, 2) == ("a", 6)
    with pytest.raises(ValueError, match="outside"):
        decode(data, -1)
    with pytest.raises(ValueError, match="outside"):
        decode(data, len(data) + 1)
    with pytest.raises(ProtocolError, match=rf"type marker at offset {len(data)}"):
        decode(data, len(data))


def test_undefined_is_a_singleton() -> None:
    assert Undefined() is UNDEFINED
    assert copy.deepcopy(UNDEFINED) is UNDEFINED
    assert pickle.loads(pickle.dumps(UNDEFINED)) is UNDEFINED
    assert repr(UNDEFINED) == "UNDEFINED"
    assert not UNDEFINED
    assert decode_all(b"\x06\x05") == [UNDEFINED, None]


# ---------------------------------------------------------------------------------------------
# References


def test_reference_returns_the_earlier_object() -> None:
    values = decode_all(obj(("a", num(1))) + ref(0))
    assert values == [{"a": 1.0}, {"a": 1.0}]
    assert values[1] is values[0]
    # Objects are numbered in the order they start: the array is 0, the object inside it 1.
    (array,) = decode_all(strict(obj(("x", num(1))), ref(1)))
    assert array == [{"x": 1.0}, {"x": 1.0}]
    assert array[1] is array[0]


def test_reference_out_of_range() -> None:
    with pytest.raises(ProtocolError, match=r"offset 4 points to object 1, but only 1"):
        decode_all(obj() + ref(1))


def test_reference_to_an_enclosing_object_cannot_make_a_cycle() -> None:
    with pytest.raises(ProtocolError, match=r"offset 4 points to object 0, which encloses it"):
        decode_all(b"\x03" + key("a") + ref(0) + END)


def test_references_cannot_blow_up_exponentially() -> None:
    # Each array holds two references to the one before: 2**n values from a few bytes each.
    data = obj() + b"".join(strict(ref(i), ref(i)) for i in range(40))
    started = time.perf_counter()
    with pytest.raises(ProtocolError, match="limit"):
        decode_all(data)
    assert time.perf_counter() - started < 1


def test_references_cannot_nest_past_the_depth_limit() -> None:
    data = obj() + b"".join(strict(ref(i)) for i in range(MAX_DEPTH + 5))
    with pytest.raises(ProtocolError, match=f"deeper than {MAX_DEPTH}"):
        decode_all(data)
    # Just under the limit is fine.
    assert len(decode_all(obj() + b"".join(strict(ref(i)) for i in range(MAX_DEPTH - 1)))) == 64


# ---------------------------------------------------------------------------------------------
# Malformed input


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\x12", r"unknown AMF0 type marker 0x12 at offset 0"),
        (string("ab") + b"\xff", r"unknown AMF0 type marker 0xff at offset 5"),
        (b"\x04", r"reserved AMF0 type marker 0x04 at offset 0"),
        (b"\x0e", r"reserved AMF0 type marker 0x0e at offset 0"),
        (b"\x09", r"object-end marker outside an object at offset 0"),
        (b"\x11\x06", r"AMF3 is not supported"),
        (string("") + b"\x00\x00\x00", r"truncated AMF0 number at offset 3: needs 9 bytes"),
        (b"\x02\x00", r"truncated AMF0 string length at offset 1"),
        (b"\x02\x00\x05abc", r"truncated AMF0 string at offset 0: needs 8 bytes, only 6 left"),
        (b"\x0c\xff\xff\xff\xffab", r"truncated AMF0 long string at offset 0"),
        (b"\x02\x00\x02\xc3\x28", r"invalid UTF-8 in AMF0 string at offset 3"),
        (b"\x03\x00\x02\xff\xfe\x05" + END, r"invalid UTF-8 in AMF0 object key at offset 3"),
        (b"\x03\x00\x01a\x05", r"truncated AMF0 object key length at offset 5"),
        (b"\x03\x00\x00", r"truncated AMF0 object end marker at offset 3"),
        (b"\x08\x00\x00", r"truncated AMF0 ECMA array count at offset 1"),
        (b"\x0a\xff\xff\xff\xff\x05", r"strict array at offset 0 claims 4294967295 elements"),
        (b"\x01", r"truncated AMF0 boolean at offset 0"),
        (b"\x07\x00", r"truncated AMF0 reference at offset 0"),
        (b"\x0b" + bytes(9), r"truncated AMF0 date at offset 0"),
        (b"\x10\x00\x05ab", r"truncated AMF0 typed object class name at offset 1"),
    ],
)
def test_malformed_input_names_the_problem_and_offset(data: bytes, message: str) -> None:
    with pytest.raises(ProtocolError, match=message):
        decode_all(data)


@pytest.mark.parametrize(
    "level",
    [
        b"\x03" + key("a"),
        b"\x08\x00\x00\x00\x01" + key("a"),
        b"\x0a\x00\x00\x00\x01",
        b"\x10" + key("C") + key("a"),
    ],
    ids=["object", "ecma", "strict", "typed"],
)
def test_deep_nesting_is_refused_quickly(level: bytes) -> None:
    data = level * 10_000
    started = time.perf_counter()
    with pytest.raises(ProtocolError, match=rf"nests deeper than {MAX_DEPTH} levels"):
        decode_all(data)
    # Refused at level 65, not after walking 10,000 levels: a generous guard, not a benchmark.
    assert time.perf_counter() - started < 2


def test_nesting_limit_is_exactly_max_depth() -> None:
    value: Any = "leaf"
    for _ in range(MAX_DEPTH):
        value = {"a": value}
    assert decode_all(encode(value)) == [value]
    with pytest.raises(ValueError, match="deeper"):
        encode([value])
    too_deep = b"\x0a\x00\x00\x00\x01" + encode(value)
    innermost = 5 + (MAX_DEPTH - 1) * 4
    with pytest.raises(ProtocolError, match=f"object at offset {innermost} nests deeper"):
        decode_all(too_deep)


@pytest.mark.parametrize(
    "value",
    [b"bytes", bytearray(b"x"), {1, 2}, object(), 1j, {1: "a"}, {"a": {(1,): 2}}, [b"x"]],
    ids=["bytes", "bytearray", "set", "object", "complex", "int-key", "tuple-key", "list-of-bytes"],
)
def test_encode_refuses_unmapped_types(value: Any) -> None:
    with pytest.raises(TypeError):
        encode(value)


def test_encode_refuses_values_that_do_not_fit() -> None:
    with pytest.raises(ValueError, match="too large"):
        encode(10**400)
    with pytest.raises(ValueError, match="65535"):
        encode({"k" * 0x10000: 1})
    cycle: dict[str, Any] = {}
    cycle["self"] = cycle
    with pytest.raises(ValueError, match="cycle"):
        encode(cycle)


# ---------------------------------------------------------------------------------------------
# Properties

keys = st.text(max_size=12)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.floats(allow_nan=False),
    st.text(max_size=40),
    st.just(UNDEFINED),
)
values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=5),
        st.dictionaries(keys, children, max_size=5),
        st.dictionaries(keys, children, max_size=5).map(ECMAArray),
    ),
    max_leaves=25,
)


@given(st.lists(values, max_size=6))
def test_round_trip(items: list[Any]) -> None:
    decoded = decode_all(encode(*items))
    assert same(decoded, items)


@given(st.integers(min_value=-(2**53), max_value=2**53))
def test_ints_round_trip_as_floats(value: int) -> None:
    assert decode_all(encode(value)) == [float(value)]


@given(
    st.datetimes(
        min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31), timezones=st.just(UTC)
    )
)
def test_millisecond_dates_round_trip(value: datetime) -> None:
    value = value.replace(microsecond=value.microsecond // 1000 * 1000)
    assert decode_all(encode(value)) == [value]


def test_nan_round_trips_as_nan() -> None:
    top, inner, array = decode_all(encode(math.nan, {"x": math.nan}, [math.nan]))
    assert math.isnan(top)
    assert math.isnan(inner["x"])
    assert math.isnan(array[0])


def decodes_or_refuses(data: bytes) -> None:
    try:
        result = decode_all(data)
    except ProtocolError:
        return
    assert isinstance(result, list)


@given(st.binary(max_size=300))
@example(b"\x03\x00\x00")
@example(b"\x0b\x7f\xf8\x00\x00\x00\x00\x00\x00\x00\x00")
@example(b"\x10\x00\x00\x00\x00\x09\x07\x00\x00")
def test_arbitrary_bytes_decode_or_raise_protocol_error(data: bytes) -> None:
    decodes_or_refuses(data)


marker_heavy = st.lists(
    st.one_of(
        st.sampled_from(
            [bytes([m]) for m in range(0x13)] + [b"\x00\x00", b"\x00\x01", b"\xff\xff", END]
        ),
        st.binary(max_size=4),
    ),
    max_size=60,
).map(b"".join)


@given(marker_heavy)
def test_marker_soup_decodes_or_raises_protocol_error(data: bytes) -> None:
    decodes_or_refuses(data)


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_mutated_encodings_decode_or_raise_protocol_error(data: st.DataObject) -> None:
    encoded = bytearray(encode(*data.draw(st.lists(values, min_size=1, max_size=4))))
    for _ in range(data.draw(st.integers(1, 4))):
        position = data.draw(st.integers(0, len(encoded) - 1))
        encoded[position] = data.draw(st.integers(0, 255))
    decodes_or_refuses(bytes(encoded))


@given(values)
def test_every_truncation_raises_protocol_error(value: Any) -> None:
    encoded = encode(value)
    for cut in range(1, len(encoded)):
        with pytest.raises(ProtocolError):
            decode_all(encoded[:cut])
    with pytest.raises(ProtocolError):
        decode(encoded[:0])


# ---------------------------------------------------------------------------------------------
# Speed


def test_decoding_a_connect_command_is_fast() -> None:
    message = FFMPEG_CONNECT + obj(("type", string("nonprivate")))
    rounds = 500
    best = math.inf
    for _ in range(5):
        started = time.perf_counter()
        for _ in range(rounds):
            decode_all(message)
        best = min(best, (time.perf_counter() - started) / rounds)
    assert best < 50e-6, f"{best * 1e6:.1f} us per connect command"


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=16384))
def test_any_command_body_decodes_or_is_refused_in_a_short_message(data: bytes) -> None:
    """What the RTMP server does with a peer's command before publish: decode it, and show it
    in a log line when it is malformed. Both stay small whatever the bytes."""
    try:
        values = decode_all(data)
    except ProtocolError as exc:
        assert len(str(exc)) < 300
    else:
        assert len(shown(values[:2], len(data))) < SHOWN_CHARS + 30


def test_a_reference_bomb_is_shown_in_a_line() -> None:
    """The issue's 4 KB command that became an 11.45 MB log line: references to one large
    object where the command name should be."""
    body = amf0_bomb()
    values = decode_all(body)
    assert not isinstance(values[0], str)  # malformed: the server refuses it
    line = f"malformed command {shown(values[:2], len(body))}"
    assert len(line) < 300 and f"({len(body):,} bytes)" in line
