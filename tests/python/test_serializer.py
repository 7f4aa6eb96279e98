"""The worker's serializer, loaded into this process, against execnet's own.

These run under the test runner's CPython only; the same code paths run
under both interpreters over the wire in test_worker.py (echo, legacy
opcodes, bad payloads).
"""

import math
import struct

import pytest
from conftest import Channel, dumps, loads, payload
from execnet import gateway_base

# Values whose execnet serialization has a fixed byte order (no sets with
# several elements: their iteration order is an implementation detail).
VALUES = [
    None,
    True,
    False,
    0,
    1,
    -1,
    2**31 - 1,
    -(2**31),
    2**31,
    2**63,
    10**40,
    -(10**40),
    -(2**31) - 1,
    0.0,
    -0.0,
    1.5,
    float("inf"),
    float("-inf"),
    1e308,
    complex(1, -2),
    "",
    "a",
    "ascii text",
    "\u00e4\u00f6\u00fc \u20ac \U0001f600",
    "\x00nul",
    b"",
    b"\x00\xff" * 10,
    bytes(range(256)),
    [],
    [1, "a"],
    [[], [[]], [1, [2, [3]]]],
    (),
    (1,),
    (1, (2, 3), [4]),
    {},
    {"a": 1, 2: "b", (1, 2): [3], frozenset([1]): None, None: True},
    set(),
    {7},
    frozenset(),
    frozenset(["x"]),
    {"nested": [{"k": (1.5, b"b", None)}]},
]


@pytest.mark.parametrize("value", VALUES, ids=repr)
def test_dumps_is_byte_identical_to_execnet(worker_module, value):
    assert worker_module.dumps(value) == dumps(value)


@pytest.mark.parametrize("value", VALUES, ids=repr)
def test_loads_reads_execnet_payloads(worker_module, value):
    loaded = worker_module.loads(dumps(value))
    assert loaded == value
    assert type(loaded) is type(value)


def test_protocol_example(worker_module):
    # PROTOCOL.md section 3, without the version byte.
    expected = bytes.fromhex("4B00000002 4600000000 4600000001 50 4600000001 4E00000001 61 50 51".replace(" ", ""))
    assert worker_module.dumps([1, "a"]) == expected


def test_ints_below_i32_use_longint(worker_module):
    dumped = worker_module.dumps(-(2**31) - 1)
    assert dumped == payload("LONGINT", 11, b"-2147483649", "STOP")
    # execnet loads it correctly even though it cannot dump it
    assert gateway_base.loads_internal(dumped) == -(2**31) - 1


def test_nan_round_trip(worker_module):
    payload = worker_module.dumps(float("nan"))
    assert payload == dumps(float("nan"))
    assert math.isnan(worker_module.loads(payload))


def test_sets_round_trip(worker_module):
    value = {1, "two", (3, 4), frozenset([5, 6])}
    assert worker_module.loads(dumps(value)) == value
    assert loads(worker_module.dumps(value)) == value


def test_channels_need_a_gateway(worker_module):
    payload = dumps([Channel(3)])
    with pytest.raises(worker_module.LoadError, match="no gateway"):
        worker_module.loads(payload)


def test_channel_dumps_like_execnet(worker_module):
    channel = worker_module.Channel(gateway=None, id=6)
    assert worker_module.dumps((channel, 1)) == dumps((Channel(6), 1))


@pytest.mark.parametrize(
    "payload, expected",
    [
        (payload("LONG", -5, "STOP"), -5),
        (payload("LONGLONG", 3, b"123", "STOP"), 123),
        (payload("PY2STRING", 2, b"\xe4\xf6", "STOP"), "\u00e4\u00f6"),
        (payload("UNICODE", 2, "\u00e4".encode(), "STOP"), "\u00e4"),
    ],
    ids=["G-long", "I-longlong", "M-py2string", "S-unicode"],
)
def test_legacy_opcodes(worker_module, payload, expected):
    loaded = worker_module.loads(payload)
    assert loaded == expected and type(loaded) is type(expected)


BAD_PAYLOADS = {
    "empty": b"",
    "no stop": payload("NONE"),
    "unknown opcode": b"Z",
    "nothing on stack": payload("STOP"),
    "two objects": payload("NONE", "NONE", "STOP"),
    "stray bytes after stop": payload("NONE", "STOP", "NONE"),
    "truncated int": payload("INT", b"\x00\x00", "STOP"),
    "truncated float": payload("FLOAT", b"\x00\x00\x00", "STOP"),
    "negative length": payload("PY3STRING", -1, "STOP"),
    "length past end": payload("BYTES", 0x1000, b"abc", "STOP"),
    "huge list": payload("NEWLIST", 0x7FFFFFFF, "STOP"),
    "negative list": payload("NEWLIST", -1, "STOP"),
    "tuple with too few items": payload("NONE", "BUILDTUPLE", 2, "STOP"),
    "negative tuple": payload("BUILDTUPLE", -1, "STOP"),
    "setitem on short stack": payload("NEWDICT", "NONE", "SETITEM", "STOP"),
    "setitem into int": payload("INT", 1, "NONE", "NONE", "SETITEM", "STOP"),
    "list index out of range": payload("NEWLIST", 1, "INT", 5, "NONE", "SETITEM", "STOP"),
    "list index not int": payload("NEWLIST", 1, "NONE", "NONE", "SETITEM", "STOP"),
    "unhashable key": payload("NEWDICT", "NEWLIST", 0, "NONE", "SETITEM", "STOP"),
    "unhashable set item": payload("NEWLIST", 0, "SET", 1, "STOP"),
    "invalid utf-8": payload("PY3STRING", 1, b"\xff", "STOP"),
    "bad longint digits": payload("LONGINT", 3, b"1a2", "STOP"),
    "longint with spaces": payload("LONGINT", 3, b" 12", "STOP"),
    "empty longint": payload("LONGINT", 0, "STOP"),
}


@pytest.mark.parametrize("payload", list(BAD_PAYLOADS.values()), ids=list(BAD_PAYLOADS))
def test_loads_rejects_bad_input(worker_module, payload):
    with pytest.raises(worker_module.LoadError):
        worker_module.loads(payload)


def test_load_error_is_a_data_format_error(worker_module):
    assert issubclass(worker_module.LoadError, worker_module.DataFormatError)
    assert issubclass(worker_module.DumpError, worker_module.DataFormatError)


class Subclassed(int):
    pass


@pytest.mark.parametrize("value", [object(), bytearray(b"x"), Subclassed(3), [1, {2: object()}], print])
def test_dumps_rejects_unsupported_types(worker_module, value):
    with pytest.raises(worker_module.DumpError, match="can't serialize <class"):
        worker_module.dumps(value)


def test_dumps_rejects_self_reference(worker_module):
    value = []
    value.append(value)
    with pytest.raises(worker_module.DumpError, match="nested too deeply"):
        worker_module.dumps(value)


def test_dumps_rejects_lone_surrogates(worker_module):
    with pytest.raises(worker_module.DumpError, match="UTF-8"):
        worker_module.dumps("\ud800")


def test_unsupported_type_message(worker_module):
    with pytest.raises(worker_module.DumpError) as info:
        worker_module.dumps(object())
    assert str(info.value) == "can't serialize <class 'object'>"
