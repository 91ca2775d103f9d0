"""`trio-gotask stubs`: typed classes generated from a sidecar's Go services (docs/typed-stubs.md).

The example's committed stubs match its Go code; calls through them over the real sidecar give
typed results; the generated decoders refuse every kind of wrong value with its path; mypy
--strict passes on a generated module and on code using it (and catches misuse); a sidecar shaped
like a user's, with packages of its own, gets a module that imports, type-checks and calls.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import stat
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import trio
from gomodule import write_module
from timing import HANG

from trio_gotask import BadReply, _stubs, open_gotask
from trio_gotask import stubs as runtime
from trio_gotask._cli import _common as cli_common
from trio_gotask._cli import main
from trio_gotask._errors import SidecarError
from trio_gotask._stubs import (
    DESCRIBE_VERSION,
    describe_sidecar,
    parse_description,
    render,
    sidecar_binary,
)

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE_API = ROOT / "examples" / "typed" / "example_api.py"
FIXTURES = Path(__file__).resolve().parent / "stubs_fixtures"  # a Go sidecar shaped like a user's
REGENERATE = "trio-gotask stubs go/example -o examples/typed/example_api.py"
UTC = timezone.utc


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch) -> None:
    """For `main` in this process: the command line's log handler may still hold the stderr of
    an earlier test's capsys, closed since; it gets this test's."""
    monkeypatch.setattr(cli_common._handler, "stream", sys.stderr)


def load(path: Path, name: str) -> ModuleType:
    """The module in ``path``, imported as ``name``."""
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def api() -> Iterator[ModuleType]:
    """examples/typed/example_api.py, the committed stubs of the example sidecar."""
    yield load(EXAMPLE_API, "example_api")
    del sys.modules["example_api"]


# -- (a) the committed stubs are those of the example's Go code --------------------------------


@pytest.mark.slow
async def test_the_example_stubs_are_current(sidecar: str) -> None:
    with trio.fail_after(HANG):
        description = await describe_sidecar(sidecar)
    text = render(parse_description(description), source="go/example", command=REGENERATE)
    assert text == EXAMPLE_API.read_text(), (
        f"examples/typed/example_api.py is out of date: run `{REGENERATE}`"
    )


@pytest.mark.slow
@pytest.mark.usefixtures("cli")
def test_the_command_writes_and_checks(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(ROOT)
    assert main(["stubs", "go/example", "-o", "examples/typed/example_api.py", "--check", "-q"]) == 0
    written = tmp_path / "api.py"
    assert main(["stubs", "go/example", "-o", str(written), "-q"]) == 0
    assert written.read_text() == EXAMPLE_API.read_text().replace(
        "-o examples/typed/example_api.py", f"-o {written}"
    )
    assert main(["stubs", "go/example"]) == 0  # to stdout, without a command to regenerate it
    out, err = capsys.readouterr()
    assert out.startswith('"""Typed classes for the Go services of go/example: App.')
    assert "Generate it again" not in out
    written.write_text(written.read_text() + "# edited\n")
    assert main(["stubs", "go/example", "-o", str(written), "--check"]) == 1
    _, err = capsys.readouterr()
    assert f"is out of date; generate it again: trio-gotask stubs go/example -o {written}" in err


def fake_sidecar(folder: Path, body: str) -> Path:
    """An executable Python script standing for a sidecar."""
    path = folder / "sidecar"
    path.write_text(f"#!{sys.executable}\nimport os, sys, time\n{body}\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


@pytest.mark.slow
@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        pytest.param(
            "print('gotask|2|unix|/tmp/x.sock', flush=True); time.sleep(3600)",
            3,
            "the sidecar served instead of describing itself: rebuild the sidecar with a gotask "
            "package that supports describe mode",
            id="serves",
        ),
        pytest.param(
            "sys.stderr.write('gotask: this program is a trio-gotask sidecar; the Python package\\n'); "
            "sys.exit(1)",
            3,
            "exited with status 1 without a description: rebuild the sidecar with a gotask package "
            "that supports describe mode",
            id="usage",
        ),
        pytest.param(
            "time.sleep(3600)",
            3,
            "the sidecar printed no description within 0.5 seconds: a sidecar built with an older "
            "gotask package serves instead; rebuild the sidecar",
            id="silent",
        ),
        pytest.param(
            "print(os.environ['GOTASK_DESCRIBE'] == '1' and '{\"describe\": 99}')",
            3,
            "the sidecar's description is of version 99, and this trio-gotask reads version 1",
            id="newer",
        ),
        pytest.param(
            'print(\'{"describe": 1, "services": 5, "structs": []}\')',
            3,
            "the sidecar's description is malformed: $.services: expected list, got int",
            id="malformed",
        ),
        pytest.param(
            "sys.stderr.write('panic: boom\\n'); sys.exit(2)",
            3,
            "the sidecar exited with status 2 without a description\n--- last lines of the sidecar's "
            "stderr ---\npanic: boom",
            id="fails",
        ),
    ],
)
@pytest.mark.usefixtures("cli")
def test_sidecars_that_do_not_describe_themselves(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, body: str, status: int, message: str
) -> None:
    sidecar = fake_sidecar(tmp_path, body)
    assert main(["stubs", str(sidecar), "--timeout", "0.5"]) == status
    _, err = capsys.readouterr()
    assert message in err


@pytest.mark.slow
async def test_a_sidecar_that_prints_without_end_is_stopped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Memory is bounded by the limit, not by what the program prints (no deadline but the hang
    guard: the limit alone must end it)."""
    monkeypatch.setattr(_stubs, "DESCRIPTION_LIMIT", 1 << 20)
    sidecar = fake_sidecar(tmp_path, "while True: sys.stdout.write('x' * 65536)")
    with trio.fail_after(HANG), pytest.raises(SidecarError, match=r"printed more than 1 MiB to stdout"):
        await _stubs.describe_sidecar(sidecar)


# -- (b) calls through the stubs, over the real sidecar ----------------------------------------


@pytest.mark.slow
def test_the_example_script(sidecar: str) -> None:
    script = ROOT / "examples" / "typed" / "typed_calls.py"
    done = subprocess.run(
        [sys.executable, str(script), sidecar],
        capture_output=True,
        text=True,
        timeout=HANG,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, done.stderr
    readme = (ROOT / "examples" / "typed" / "README.md").read_text()
    assert done.stdout in readme  # the README shows what it prints


async def test_typed_calls(sidecar: str, api: Any) -> None:
    placed = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    address = api.Address(street="1 Analytical Row", city="London", zip="N1")
    order = api.Order(
        id=7,
        customer="Ada",
        items=[
            api.LineItem(sku="apple", quantity=2, price=0.5),
            api.LineItem(sku="fig", quantity=1, price=1.25),
        ],
        ship_to=address,
        labels={"gift": "yes"},
        signature=b"Ada L.",
        placed=placed,
        class_="express",
    )
    with trio.fail_after(HANG):
        async with open_gotask(sidecar) as gt:
            app = api.App(gt)
            assert await app.PlaceOrder(order) == api.Receipt(
                order_id=7,
                total=2.25,
                lines=["2 x apple at 0.50", "1 x fig at 1.25"],
                counts={"apple": 2, "fig": 1},
                ship_to=address,
                due=placed + timedelta(days=1),
                express=True,
                digest=hashlib.sha256(b"Ada L.").digest(),
            )
            # Go's nil slice (lines) and the fields left out (digest, omitempty) take their defaults.
            collected = api.Order(id=8, placed=placed)
            assert await app.PlaceOrder(collected) == api.Receipt(order_id=8, due=placed + timedelta(days=2))

            async with app.TrackOrder(order) as steps:
                shipments = [step async for step in steps]
            assert shipments == [
                api.Shipment(order_id=7, step=0, status="packed", at=placed),
                api.Shipment(
                    order_id=7, step=1, status="shipped", at=placed + timedelta(hours=1), where=address
                ),
                api.Shipment(
                    order_id=7, step=2, status="delivered", at=placed + timedelta(hours=2), where=address
                ),
            ]
            async with app.TrackOrder(collected, window=1) as steps:
                assert [step.status async for step in steps] == ["packed"]

            assert await app.Add(api.AddArgs(a=2, b=40)) == 42
            assert await app.Hi("Reasno") == {"hello": "Reasno"}
            assert await app.IntMap({1: "a", 2: "b"}) == {1: "A", 2: "B"}
            assert await app.Echo([1, "x"]) == [1, "x"]
            events = [
                api.Event(name="e", data=b"\x00\xff", when=placed, tags=["a", "b"], level=-3),
                api.Event(),
            ]
            assert await app.Events(events) == events
            assert await app.Float32(0.5) == 0.5
            async with app.Count(3) as numbers:
                assert [n async for n in numbers] == [0, 1, 2]
            async with app.Chunks(api.ChunksArgs(Count=2, Size=3)) as chunks:
                assert [c async for c in chunks] == [b"\x00" * 3, b"\x01" * 3]
            async with app.BadItem() as items:  # items of type any: the stream as GoTask.stream gives it
                assert await items.receive() == 1
                with pytest.raises(BadReply):
                    await items.receive()


async def test_items_the_stubs_refuse(sidecar: str, api: Any) -> None:
    """An item of the wrong type is received as BadReply, and the stream goes on."""
    with trio.fail_after(HANG):
        async with open_gotask(sidecar) as gt, runtime.stream(gt, "App.Count", 2, api._str, None) as items:
            with pytest.raises(BadReply) as caught:
                await items.receive()
            assert str(caught.value).startswith("App.Count: bad_reply: item 0 $: expected str, got int 0;")
            with pytest.raises(BadReply, match=r"item 1 \$: expected str, got int 1"):
                await items.receive()
            with pytest.raises(trio.EndOfChannel):
                await items.receive()


# -- (c) the checked decoders, against every kind of wrong value -------------------------------


def scalar(kind: str, **more: Any) -> dict[str, Any]:
    return {"kind": kind, "go": kind, **more}


def of(kind: str, elem: dict[str, Any], **more: Any) -> dict[str, Any]:
    return {"kind": kind, "go": kind, "elem": elem, **more}


def struct(ref: str) -> dict[str, Any]:
    return {"kind": "struct", "go": ref, "ref": ref}


def fields(**types: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {"key": key.replace("_SPACE_", " "), "go_name": key, "doc": "", "type": t} for key, t in types.items()
    ]


INT = scalar("int", bits=64)
STR = scalar("string")
KINDS = {
    "describe": DESCRIBE_VERSION,
    "services": [
        {
            "name": "Kinds",
            "doc": "",
            "methods": [
                {
                    "name": "All",
                    "doc": "",
                    "kind": "call",
                    "ctx": False,
                    "arg": struct("t.T"),
                    "reply": struct("t.T"),
                },
                {"name": "Ints", "doc": "", "kind": "stream", "ctx": False, "arg": INT, "reply": INT},
            ],
        }
    ],
    "structs": [
        {"id": "t.S", "name": "S", "package": "t", "doc": "", "as_array": False, "fields": fields(n=INT)},
        {
            "id": "t.P",
            "name": "P",
            "package": "t",
            "doc": "",
            "as_array": True,
            "fields": fields(a=INT, b=STR),
        },
        {
            "id": "t.T",
            "name": "T",
            "package": "t",
            "doc": "",
            "as_array": False,
            "fields": fields(
                b=scalar("bool"),
                i=INT,
                f=scalar("float", bits=64),
                s=STR,
                by=scalar("bytes"),
                fixed=scalar("bytes", len=4),
                t=scalar("time"),
                a=scalar("any"),
                e=scalar("error"),
                l=of("list", INT),
                lf=of("list", scalar("float", bits=64)),
                m={"kind": "map", "go": "map", "key": STR, "elem": INT},
                mi={"kind": "map", "go": "map", "key": INT, "elem": STR},
                mt={"kind": "map", "go": "map", "key": STR, "elem": of("pointer", scalar("time"))},
                p=of("pointer", INT),
                ps=of("pointer", struct("t.S")),
                ls=of("list", struct("t.S")),
                ms={"kind": "map", "go": "map", "key": STR, "elem": struct("t.S")},
                nested=of("list", of("list", STR)),
                s1=struct("t.S"),
                pa=struct("t.P"),
                a_SPACE_b=STR,
                **{"class": STR},
            ),
        },
    ],
}


@pytest.fixture(scope="module")
def kinds(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The module generated for KINDS, a struct with a field of each kind."""
    path = tmp_path_factory.mktemp("kinds") / "kinds_api.py"
    path.write_text(render(parse_description(json.loads(json.dumps(KINDS))), source="kinds"))
    yield load(path, "kinds_api")
    del sys.modules["kinds_api"]


@pytest.mark.fast
def test_decoding_a_good_value(kinds: Any) -> None:
    when = datetime(2024, 5, 1, tzinfo=UTC)
    wire = {
        "b": True,
        "i": -5,
        "f": 2,  # an int for a float: Go's float decodes it too
        "s": "x",
        "by": b"\x00",
        "t": when,
        "a": [1, {"x": None}],
        "e": "boom",
        "l": [1, None, 3],  # None is Go's zero value, as Go decodes nil
        "m": {"x": 1},
        "mi": {1: "one"},
        "mt": {"x": when, "y": None},
        "p": None,
        "ps": {"n": 4},
        "ls": [{"n": 1}, None],
        "ms": {"k": {"n": 2}},
        "nested": [["a"], []],
        "pa": [1, "z"],  # a struct Go encodes as an array
        "a b": "spaced",
        "class": "keyword",
        "unknown": "a field a newer sidecar added",
    }
    got = runtime.decoded("Kinds.All", wire, kinds._decode_T)
    assert got == kinds.T(
        b=True,
        i=-5,
        f=2.0,
        s="x",
        by=b"\x00",
        t=when,
        a=[1, {"x": None}],
        e="boom",
        l=[1, 0, 3],
        m={"x": 1},
        mi={1: "one"},
        mt={"x": when, "y": None},
        ps=kinds.S(n=4),
        ls=[kinds.S(n=1), kinds.S()],
        ms={"k": kinds.S(n=2)},
        nested=[["a"], []],
        pa=kinds.P(a=1, b="z"),
        a_b="spaced",
        class_="keyword",
    )
    assert type(got.f) is float
    # Missing keys (omitempty) and nil take Go's zero values.
    empty = runtime.decoded("Kinds.All", {}, kinds._decode_T)
    assert empty == kinds.T() == runtime.decoded("Kinds.All", None, kinds._decode_T)
    assert (empty.fixed, empty.t, empty.s1, empty.l) == (
        bytes(4),
        datetime(1, 1, 1, tzinfo=UTC),
        kinds.S(),
        [],
    )
    # Encoding sends the wire keys.
    encoded = kinds._encode_T(got)
    assert encoded["a b"] == "spaced" and encoded["class"] == "keyword"
    assert encoded["ls"] == [{"n": 1}, {"n": 0}] and encoded["ps"] == {"n": 4}
    assert runtime.decoded("Kinds.All", encoded, kinds._decode_T) == got


@pytest.mark.fast
@pytest.mark.parametrize(
    ("wire", "message"),
    [
        (5, "$: expected dict (T), got int 5"),
        ({"b": 1}, "$.b: expected bool, got int 1"),
        ({"i": "x"}, "$.i: expected int, got str 'x'"),
        ({"i": True}, "$.i: expected int, got bool True"),
        ({"i": 1.5}, "$.i: expected int, got float 1.5"),
        ({"f": "x"}, "$.f: expected float, got str 'x'"),
        ({"s": b"x"}, "$.s: expected str, got bytes (1 byte)"),
        ({"by": "x"}, "$.by: expected bytes, got str 'x'"),
        ({"fixed": [0, 0]}, "$.fixed: expected bytes, got list (2 items)"),
        ({"t": 5}, "$.t: expected datetime, got int 5"),
        ({"e": 5}, "$.e: expected str, got int 5"),
        ({"l": [1, 2, "x"]}, "$.l[2]: expected int, got str 'x'"),
        ({"l": {}}, "$.l: expected list, got dict (0 entries)"),
        ({"lf": [1.5, "x"]}, "$.lf[1]: expected float, got str 'x'"),
        ({"m": {"a": 1, "b": "x"}}, "$.m.b: expected int, got str 'x'"),
        ({"m": {1: 1}}, "$.m[1]: expected str (a map key), got int 1"),
        ({"m": [1]}, "$.m: expected dict, got list (1 item)"),
        ({"mi": {"x": "y"}}, "$.mi.x: expected int (a map key), got str 'x'"),
        ({"mi": {1: 2}}, "$.mi[1]: expected str, got int 2"),
        ({"mt": {"a b": 5}}, '$.mt["a b"]: expected datetime, got int 5'),
        ({"p": "x"}, "$.p: expected int, got str 'x'"),
        ({"ps": 5}, "$.ps: expected dict (S), got int 5"),
        ({"ps": {"n": "x"}}, "$.ps.n: expected int, got str 'x'"),
        ({"ls": [{}, {}, {"n": "x"}]}, "$.ls[2].n: expected int, got str 'x'"),
        ({"ms": {"k": {"n": 1.5}}}, "$.ms.k.n: expected int, got float 1.5"),
        ({"nested": [["a"], [1]]}, "$.nested[1][0]: expected str, got int 1"),
        ({"s1": []}, "$.s1: expected dict (S), got list (0 items)"),
        ({"pa": [1, 2, 3]}, "$.pa: expected list or dict (P), got list (3 items)"),
        ({"pa": [1, 2]}, "$.pa.b: expected str, got int 2"),
        ({"a b": 5}, '$["a b"]: expected str, got int 5'),
        ({"class": 5}, "$.class: expected str, got int 5"),
        ({"i": "x" * 100}, f"$.i: expected int, got str '{'x' * 39}..."),
    ],
)
def test_decoding_refuses_with_the_path(kinds: Any, wire: Any, message: str) -> None:
    with pytest.raises(BadReply) as caught:
        runtime.decoded("Kinds.All", wire, kinds._decode_T)
    exc = caught.value
    assert (exc.method, exc.type) == ("Kinds.All", "bad_reply")
    assert exc.message.startswith(f"reply {message}"), exc.message
    assert exc.message.endswith("the stubs do not match the sidecar: generate them again (trio-gotask stubs)")


@pytest.mark.fast
def test_the_example_decoders_refuse_with_the_path(api: Any) -> None:
    receipt = {"order_id": 1, "ship_to": {"street": "x", "city": 5}}
    with pytest.raises(
        BadReply, match=r"^App.PlaceOrder: bad_reply: reply \$.ship_to.city: expected str, got int 5;"
    ):
        runtime.decoded("App.PlaceOrder", receipt, api._decode_Receipt)
    shipment = {"order_id": 1, "where": {"zip": ["N1"]}}
    with pytest.raises(BadReply, match=r"reply \$.where.zip: expected str, got list \(1 item\)"):
        runtime.decoded("App.TrackOrder", shipment, api._decode_Shipment)


# -- (d) mypy --strict: the generated module, and code that uses it -----------------------------


USER_CODE = """\
from __future__ import annotations

from datetime import datetime, timezone

import trio

import trio_gotask
from example_api import Address, App, LineItem, Order, Receipt, Shipment


async def place(gt: trio_gotask.GoTask) -> tuple[Receipt, list[Shipment]]:
    app = App(gt)
    order = Order(
        id=1,
        items=[LineItem(sku="apple", quantity=2, price=0.5)],
        ship_to=Address(city="London"),
        placed=datetime.now(timezone.utc),
        class_="express",
    )
    receipt = await app.PlaceOrder(order)
    total: float = receipt.total + sum(receipt.counts.values())
    due: datetime = receipt.due
    city: str | None = receipt.ship_to.city if receipt.ship_to is not None else None
    async with app.TrackOrder(order, window=1 << 16) as steps:
        shipments = [step async for step in steps]
    channel: trio.abc.ReceiveChannel[int]
    async with app.Count(3) as channel:
        numbers: list[int] = [n async for n in channel]
    print(total, due, city, numbers, await app.Hi("x"), await app.Echo(None))
    return receipt, shipments
"""

USER_MISTAKES = """\
from __future__ import annotations

import trio_gotask
from example_api import AddArgs, App, Order


async def wrong(gt: trio_gotask.GoTask) -> None:
    app = App(gt)
    await app.Add(1)  # error: incompatible type "int"; expected "AddArgs"
    await app.Add(AddArgs(a="1"))  # error: incompatible type "str"; expected "int"
    receipt = await app.PlaceOrder(Order())
    receipt.total.upper()  # error: "float" has no attribute "upper"
    receipt.total = 1.0  # error: Property "total" defined in "Receipt" is read-only
    Order(1)  # error: Too many positional arguments for "Order"
    async with app.Count("3") as numbers:  # error: incompatible type "str"; expected "int"
        async for n in numbers:
            n.upper()  # error: "int" has no attribute "upper"
"""


def run_mypy(tmp_path: Path, *files: Path) -> tuple[str, int]:
    import mypy.api as api  # in the test extras: the check must run, never be skipped

    config = tmp_path / "mypy.ini"
    config.write_text("[mypy]\nstrict = True\npython_version = 3.10\n")
    out, err, status = api.run(
        ["--config-file", str(config), "--cache-dir", str(tmp_path / ".mypy_cache"), *map(str, files)]
    )
    return out + err, status


@pytest.mark.slow
def test_mypy_strict_passes_on_the_stubs_and_their_users(tmp_path: Path) -> None:
    shutil.copy(EXAMPLE_API, tmp_path / "example_api.py")
    (tmp_path / "user_code.py").write_text(USER_CODE)
    out, status = run_mypy(tmp_path, tmp_path / "example_api.py", tmp_path / "user_code.py")
    assert status == 0, out


@pytest.mark.slow
def test_mypy_catches_misuse(tmp_path: Path) -> None:
    shutil.copy(EXAMPLE_API, tmp_path / "example_api.py")
    (tmp_path / "user_mistakes.py").write_text(USER_MISTAKES)
    out, status = run_mypy(tmp_path, tmp_path / "user_mistakes.py")
    assert status == 1
    expected = [line.split("# error: ", 1)[1] for line in USER_MISTAKES.splitlines() if "# error: " in line]
    reported = [line for line in out.splitlines() if ": error: " in line]
    assert len(reported) == len(expected), out
    for line, words in zip(reported, expected, strict=True):
        assert words in line, out


# -- (e) a sidecar shaped like a user's ---------------------------------------------------------


def shop_module(folder: Path) -> Path:
    """tests/stubs_fixtures/shop as a Go module of its own: net/rpc-shaped services over packages
    of its own, with types the example does not use."""
    shop = FIXTURES / "shop"
    return write_module(folder, {str(p.relative_to(shop)): p.read_text() for p in shop.rglob("*.go")})


def ruff(*args: str) -> subprocess.CompletedProcess[str]:
    if shutil.which("ruff") is None and importlib.util.find_spec("ruff") is None:
        pytest.fail("ruff is not installed: pip install -e '.[test]' installs it")
    return subprocess.run([sys.executable, "-m", "ruff", *args], capture_output=True, text=True, timeout=HANG)


@pytest.mark.slow
async def test_a_users_sidecar(tmp_path: Path) -> None:
    folder = shop_module(tmp_path / "shop")
    with trio.fail_after(HANG * 3):
        binary = await sidecar_binary(folder)
        description = await describe_sidecar(binary)
    text = render(parse_description(description), source="shop")
    path = tmp_path / "shop_api.py"
    path.write_text(text)
    for length in ("88", "110"):
        done = ruff("format", "--check", "--diff", "--no-cache", "--line-length", length, str(path))
        assert done.returncode == 0, done.stdout + done.stderr
    rules = "E,F,W,I,B,UP,RUF,SIM"
    done = ruff(
        "check", "--no-cache", "--isolated", "--target-version", "py310", "--select", rules, str(path)
    )
    assert done.returncode == 0, done.stdout + done.stderr
    out, status = await trio.to_thread.run_sync(run_mypy, tmp_path, path)
    assert status == 0, out

    shop = load(path, "shop_api")
    try:
        # What a user's Go shapes become.
        assert "class shop_Inventory:" in text  # RegisterName("shop.Inventory", ...)
        assert "class OrdersItem:" in text  # orders.Item, whose name catalog.Item has
        assert "    class_: _str_ = " in text  # msgpack:"class"; str hidden by a field named str
        assert "secret" not in text.lower()  # msgpack:"-"
        assert "W is the width." in text  # an unnamed struct's field comment
        assert "ID numbers the record." in text  # an embedded struct's field, inlined
        fields = [f.name for f in shop.Item.__dataclass_fields__.values()]
        assert fields[:3] == ["id", "created", "sku"]  # catalog.Base's fields, inlined first
        with trio.fail_after(HANG):
            async with open_gotask(binary) as gt:
                inventory = shop.shop_Inventory(gt)
                apple = await inventory.Item(shop.Args(sku="apple"))
                assert apple == shop.Item(
                    id=1, sku="apple", price=50, class_="fruit", tags=["red"], code=b"AP", digest=bytes(4)
                )
                assert await inventory.Item(shop.Args(sku="none")) is None
                tree = await inventory.Tree(1)
                assert tree == shop.Tree(name="level1", children=[shop.Tree(name="level0")])
                page = await inventory.Page(2)
                assert [item.sku for item in page.items] == ["apple", "fig"] and page.total == 2
                assert page.items[1].grid == [[1, 2], [3]] and page.items[1].level == 3
                order = await inventory.Place(shop.Cart(lines=[shop.Line(sku="fig", count=2)], note="hi"))
                assert (order.number, order.note, order.total, order.list) == (1, "HI", 250, [])
                assert order.items == [shop.OrdersItem(Item=page.items[1], Count=2)]
                assert await shop.Clock(gt).Packed(shop.Packed(a=1, b="x")) == shop.Packed(a=1, b="x")
                assert sorted(await inventory.All(shop.AllArgs())) == ["apple", "fig"]
    finally:
        del sys.modules["shop_api"]


@pytest.mark.slow
async def test_without_the_source_the_docs_are_empty(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A sidecar built with -trimpath names no source files: its description has no comments."""
    folder = shop_module(tmp_path / "shop")
    monkeypatch.setenv("GOFLAGS", f"{os.environ.get('GOFLAGS', '')} -trimpath".strip())
    with trio.fail_after(HANG * 3):
        description = parse_description(await describe_sidecar(await sidecar_binary(folder)))
    docs = [s.doc for s in description.services] + [m.doc for s in description.services for m in s.methods]
    docs += [s.doc for s in description.structs.values()]
    docs += [f.doc for s in description.structs.values() for f in s.fields]
    assert not any(docs)
    text = render(description, source="shop")
    compile(text, "shop_api.py", "exec")
    assert "The methods of the Go service shop.Inventory." in text


@pytest.mark.fast
async def test_a_sidecar_that_is_not_there() -> None:
    with pytest.raises(SidecarError, match="neither a Go package folder nor a sidecar"):
        await sidecar_binary("/no/such/sidecar")


@pytest.mark.fast
def test_the_command_line(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["stubs", "--help"])
    assert exited.value.code == 0
    out, _ = capsys.readouterr()
    for option in ("SIDECAR", "--output", "--check", "--timeout", "exit status:"):
        assert option in out
    assert main(["stubs", "go/example", "--check"]) == 2
    _, err = capsys.readouterr()
    assert "--check compares with FILE: pass -o FILE" in err
