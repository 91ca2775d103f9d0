"""The type mapping's rules as a Python caller meets them (protocol.md section 3): what the sidecar
refuses, with which message, and what it converts."""

from __future__ import annotations

import datetime
import math
import struct
from typing import Any

import pytest

from trio_gotask import BadParams, BadReply, GoTask
from trio_gotask.pytest_plugin import gotask_fixture

UTC = datetime.timezone.utc
INT_RANGE = "from -9223372036854775808 to 9223372036854775807"


gt = gotask_fixture("go/example")  # the plugin users get (docs/testing.md)


async def refused(gt: GoTask, method: str, arg: Any) -> BadParams:
    with pytest.raises(BadParams) as info:
        await gt.call(method, arg)
    return info.value


async def test_a_float_for_an_integer_is_refused_not_truncated(gt: GoTask) -> None:
    exc = await refused(gt, "App.Int", 1.5)
    assert str(exc) == "App.Int: bad_params: expected an integer for int64, got float 1.5"
    assert (exc.method, exc.type) == ("App.Int", "bad_params")
    assert exc.message == "expected an integer for int64, got float 1.5"
    assert await gt.call("App.Int", -(2**63)) == -(2**63)


@pytest.mark.parametrize("value", [2**63, 2**64 - 1])
async def test_an_integer_out_of_range_is_refused(gt: GoTask, value: int) -> None:
    exc = await refused(gt, "App.Int", value)
    assert exc.message == f"expected an integer {INT_RANGE} for int64, got int {value}"


@pytest.mark.parametrize("value", [128, 300, -129, 2**64 - 1])
async def test_a_named_integer_type_refuses_what_it_cannot_hold(gt: GoTask, value: int) -> None:
    exc = await refused(gt, "App.Level", value)
    assert exc.message == f"expected an integer from -128 to 127 for main.Level, got int {value}"


@pytest.mark.parametrize("value", [127, -128, 0])
async def test_a_named_integer_type_takes_what_it_holds(gt: GoTask, value: int) -> None:
    assert await gt.call("App.Level", value) == value


def as_float32(x: float) -> float:
    value: float = struct.unpack("f", struct.pack("f", x))[0]
    return value


async def test_float32_narrows_a_python_float(gt: GoTask) -> None:
    got = await gt.call("App.Float32", 0.1)
    assert got == as_float32(0.1)
    assert got != 0.1
    assert await gt.call("App.Float32", 3) == 3.0
    assert await gt.call("App.Float32", 2**64 - 1) == as_float32(2.0**64)
    assert await gt.call("App.Float32", -math.inf) == -math.inf
    assert math.isnan(await gt.call("App.Float32", math.nan))


async def test_float32_refuses_a_float_beyond_its_range(gt: GoTask) -> None:
    exc = await refused(gt, "App.Float32", 1e300)
    assert exc.message == (
        "expected a number from -3.4028234663852886e+38 to 3.4028234663852886e+38 for float32, got float 1e+300"
    )


@pytest.mark.parametrize(
    ("event", "message"),
    [
        ({"name": b"x"}, "[0].name: expected a string for string, got bin (1 byte)"),
        ({"data": "xyz"}, '[0].data: expected bytes for []uint8, got str "xyz"'),
        ({"tags": ["a", b"bc"]}, "[0].tags[1]: expected a string for string, got bin (2 bytes)"),
    ],
)
async def test_str_and_bin_do_not_mix_in_a_struct_field(
    gt: GoTask, event: dict[str, Any], message: str
) -> None:
    exc = await refused(gt, "App.Events", [event])
    assert exc.message == message


async def test_a_struct_takes_each_field_in_its_own_type(gt: GoTask) -> None:
    when = datetime.datetime(2024, 2, 29, 12, 30, 15, 123456, tzinfo=UTC)
    sent = {"name": "n", "data": b"\x00\xff", "when": when, "tags": ["a", "b"], "level": -3}
    assert await gt.call("App.Events", [sent]) == [sent]


@pytest.mark.fault(
    fault="an argument the Go type cannot hold (a float for an int, bin for a string field, a nested mismatch)",
    sees="BadParams saying what did not fit and where; the connection goes on",
)
async def test_the_message_names_where_a_nested_value_is_wrong(gt: GoTask) -> None:
    exc = await refused(gt, "App.Events", [{}, {"level": 1}, {"when": 5}])
    assert str(exc) == "App.Events: bad_params: [2].when: expected a timestamp for time.Time, got int 5"
    exc = await refused(gt, "App.Events", [{"level": 200}])
    assert exc.message == "[0].level: expected an integer from -128 to 127 for main.Level, got int 200"


async def test_none_for_a_time_field_is_the_zero_time(gt: GoTask) -> None:
    # None used to panic inside the msgpack library and take the sidecar down.
    [got] = await gt.call("App.Events", [{"name": "x", "when": None}])
    assert got["when"] == datetime.datetime(1, 1, 1, tzinfo=UTC)
    assert await gt.call("App.Hi", "still here") == {"hello": "still here"}


async def test_none_for_a_value_is_its_zero_value(gt: GoTask) -> None:
    assert await gt.call("App.Int", None) == 0
    assert await gt.call("App.Pair", None) == 0
    assert await gt.call("App.Add", {"a": None, "b": 2}) == 2


async def test_a_map_none_of_whose_keys_is_a_field_is_refused(gt: GoTask) -> None:
    exc = await refused(gt, "App.Add", {"c": 1})
    assert exc.message == (
        "cannot use a map with key c as type main.AddArgs: none of them is a field of it (fields: a, b)"
    )
    # Keys that are no field are ignored when another one is.
    assert await gt.call("App.Add", {"a": 1, "b": 2, "c": 3}) == 3
    assert await gt.call("App.Add", {"a": 1}) == 1


async def test_an_array_takes_a_list_of_exactly_its_length(gt: GoTask) -> None:
    assert await gt.call("App.Pair", [1, 2]) == 3
    exc = await refused(gt, "App.Pair", [1])
    assert exc.message == "expected a list of 2 items for [2]int, got array (1 item)"
    exc = await refused(gt, "App.Pair", [1, 2, 3])
    assert exc.message == "expected a list of 2 items for [2]int, got array (3 items)"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({(1, 2): "x"}, "expected a map key Go can hash for any, got array (2 items)"),
        ({"a": [{b"k": 1}]}, "a[0]: expected a map key Go can hash for any, got bin (1 byte)"),
    ],
)
async def test_a_map_key_go_cannot_hash_is_refused(gt: GoTask, value: Any, message: str) -> None:
    exc = await refused(gt, "App.Echo", value)
    assert exc.message == message


@pytest.mark.fault(
    fault="a Go reply Python cannot hold (a time past year 9999, a map keyed by arrays)",
    sees="BadReply from the sidecar, saying what and where; the connection goes on",
)
async def test_a_reply_python_cannot_hold_is_refused_by_the_sidecar(gt: GoTask) -> None:
    assert await gt.call("App.TimeAt", 2024) == datetime.datetime(2024, 1, 1, tzinfo=UTC)
    with pytest.raises(BadReply, match="time 12000-01-01T00:00:00Z is outside years 1-9999"):
        await gt.call("App.TimeAt", 12000)
    with pytest.raises(BadReply, match="map key"):
        await gt.call("App.Grid", 2)
    assert await gt.call("App.Grid", 0) == {}
    assert await gt.call("App.Hi", "after") == {"hello": "after"}
