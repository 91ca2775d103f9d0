"""What typed stubs cost: decoding one reply as is, through the generated checked decoders, and
through alternatives, all in one process.

    python benchmarks/typed.py [--rounds 5]

The reply is a struct of 10 fields (scalars, a time, bytes, a list, a map, a pointer to a
struct) holding a list of 100 structs of 6 fields: the module `trio-gotask stubs` would write
for it is generated from a description made here (no Go needed), and each way decodes the
same msgpack bytes:

- **as is**: ``msgpack.unpackb`` with the client's options, which ``GoTask.call`` returns;
- **generated**: then the generated ``_decode_Report``, checking every value;
- **table-driven**: then one generic decoder reading a table of the fields instead, the design
  the generated code was chosen over;
- **msgspec.convert**: then ``msgspec.convert`` into the same dataclasses, when msgspec is
  installed (``pip install msgspec``; it is not a dependency of trio-gotask);

and, for scale, ``msgspec.msgpack.decode`` of the bytes straight into the dataclasses, which the
client cannot do: it decodes a frame before it knows which call the frame answers.

Times are per reply, each way's best round.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
import tempfile
import timeit
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import msgpack

from trio_gotask._stubs import parse_description, render

INT = {"kind": "int", "go": "int", "bits": 64}
FLOAT = {"kind": "float", "go": "float64", "bits": 64}
STR = {"kind": "string", "go": "string"}
TIME = {"kind": "time", "go": "time.Time"}


def fields(**types: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"key": key, "go_name": key, "doc": "", "type": t} for key, t in types.items()]


def struct(go_name: str, /, **types: dict[str, Any]) -> dict[str, Any]:
    return {"id": f"b.{go_name}", "name": go_name, "package": "b", "doc": "", "fields": fields(**types)}


DESCRIPTION = {
    "describe": 1,
    "services": [
        {
            "name": "Reports",
            "doc": "",
            "methods": [
                {
                    "name": "Get",
                    "doc": "",
                    "kind": "call",
                    "ctx": False,
                    "arg": INT,
                    "reply": {"kind": "struct", "go": "b.Report", "ref": "b.Report"},
                }
            ],
        }
    ],
    "structs": [
        struct("User", id=INT, name=STR, email=STR),
        struct(
            "Line",
            sku=STR,
            quantity=INT,
            price=FLOAT,
            note=STR,
            shipped=TIME,
            tags={"kind": "list", "go": "[]string", "elem": STR},
        ),
        struct(
            "Report",
            id=INT,
            title=STR,
            score=FLOAT,
            final={"kind": "bool", "go": "bool"},
            created=TIME,
            digest={"kind": "bytes", "go": "[]byte"},
            tags={"kind": "list", "go": "[]string", "elem": STR},
            counts={"kind": "map", "go": "map[string]int", "key": STR, "elem": INT},
            owner={
                "kind": "pointer",
                "go": "*b.User",
                "elem": {"kind": "struct", "go": "b.User", "ref": "b.User"},
            },
            lines={
                "kind": "list",
                "go": "[]b.Line",
                "elem": {"kind": "struct", "go": "b.Line", "ref": "b.Line"},
            },
        ),
    ],
}


def reply() -> dict[str, Any]:
    when = datetime(2024, 5, 1, tzinfo=timezone.utc)
    return {
        "id": 42,
        "title": "May",
        "score": 0.97,
        "final": True,
        "created": when,
        "digest": bytes(32),
        "tags": ["a", "b", "c"],
        "counts": {"apple": 3, "fig": 5},
        "owner": {"id": 1, "name": "Ada", "email": "ada@example.com"},
        "lines": [
            {
                "sku": f"sku-{i}",
                "quantity": i,
                "price": i * 0.25,
                "note": "",
                "shipped": when + timedelta(hours=i),
                "tags": ["x"],
            }
            for i in range(100)
        ],
    }


def table_driven(module: Any) -> Callable[[Any], Any]:
    """A generic decoder that reads a table of each struct's fields: per field, its key, the type
    a valid value has, and the function that converts any other value or refuses it."""
    zero = datetime(1, 1, 1, tzinfo=timezone.utc)

    def scalar(kind: type, default: Any) -> Callable[[Any], Any]:
        def check(value: Any) -> Any:
            if value is None:
                return default
            if kind is float and type(value) is int:
                return float(value)
            raise module._stubs.Mismatch(kind.__name__, value)

        return check

    def struct(
        cls: type, table: list[tuple[str, type | None, Callable[[Any], Any], Any]]
    ) -> Callable[[Any], Any]:
        # The slots filled as the generated decoders fill them.
        rows = [(*row, cls.__dict__[row[0]].__set__) for row in table]

        def decode(obj: Any) -> Any:
            if type(obj) is not dict:
                if obj is None:
                    return cls()
                raise module._stubs.Mismatch(f"dict ({cls.__name__})", obj)
            filled: Any = object.__new__(cls)
            for key, kind, convert, default, fill in rows:
                value = obj.get(key, default)
                if type(value) is not kind:
                    try:
                        value = convert(value)
                    except module._stubs.Mismatch as exc:
                        raise exc.at(f".{key}") from None
                fill(filled, value)
            return filled

        return decode

    def list_of(decode: Callable[[Any], Any]) -> Callable[[Any], Any]:
        def decode_list(obj: Any) -> Any:
            if type(obj) is not list:
                return scalar(list, [])(obj)
            return [decode(x) for x in obj]

        return decode_list

    def str_list(obj: Any) -> Any:
        if type(obj) is not list:
            return scalar(list, [])(obj)
        return [x if type(x) is str else scalar(str, "")(x) for x in obj]

    def counts(obj: Any) -> Any:
        if type(obj) is not dict:
            return scalar(dict, {})(obj)
        return {k: v if type(v) is int else scalar(int, 0)(v) for k, v in obj.items()}

    common = {
        "int": (int, scalar(int, 0), 0),
        "str": (str, scalar(str, ""), ""),
        "float": (float, scalar(float, 0.0), 0.0),
    }
    time = (datetime, scalar(datetime, zero), zero)
    user = struct(module.User, [("id", *common["int"]), ("name", *common["str"]), ("email", *common["str"])])
    line = struct(
        module.Line,
        [
            ("sku", *common["str"]),
            ("quantity", *common["int"]),
            ("price", *common["float"]),
            ("note", *common["str"]),
            ("shipped", *time),
            ("tags", None, str_list, None),
        ],
    )
    return struct(
        module.Report,
        [
            ("id", *common["int"]),
            ("title", *common["str"]),
            ("score", *common["float"]),
            ("final", bool, scalar(bool, False), False),
            ("created", *time),
            ("digest", bytes, scalar(bytes, b""), b""),
            ("tags", None, str_list, None),
            ("counts", None, counts, None),
            ("owner", None, lambda v: None if v is None else user(v), None),
            ("lines", None, list_of(line), None),
        ],
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=20, help="rounds of each way (the best counts)")
    options = parser.parse_args()

    folder = Path(tempfile.mkdtemp(prefix="gotask-typed-"))
    (folder / "reports_api.py").write_text(
        render(parse_description(DESCRIPTION), source="benchmarks/typed.py")
    )
    sys.path.insert(0, str(folder))
    module: Any = importlib.import_module("reports_api")

    payload = msgpack.packb(reply(), use_bin_type=True, datetime=True)
    unpack_options = {"raw": False, "strict_map_key": False, "timestamp": 3}
    wire = msgpack.unpackb(payload, **unpack_options)

    def unpack() -> Any:
        return msgpack.unpackb(payload, **unpack_options)

    table = table_driven(module)
    ways: list[tuple[str, Callable[[], Any]]] = [
        ("as is (msgpack.unpackb)", lambda: None),
        ("generated, checked", lambda: module._decode_Report(wire)),
        ("table-driven, checked", lambda: table(wire)),
    ]
    try:
        msgspec: Any = importlib.import_module("msgspec")
    except ImportError:
        print("(msgspec is not installed: pip install msgspec for its rows)\n")
    else:
        decoder = msgspec.msgpack.Decoder(module.Report)
        ways.append(("msgspec.convert", lambda: msgspec.convert(wire, type=module.Report)))
    expected = module._decode_Report(wire)
    for name, way in ways[2:]:
        assert way() == expected, name

    # Rounds alternate between the ways; each way's best round counts (the machine is shared).
    best = {name: float("inf") for name, _ in ways}
    best_unpack = float("inf")
    for _ in range(options.rounds):
        best_unpack = min(best_unpack, timeit.timeit(unpack, number=200) / 200)
        for name, way in ways:
            best[name] = min(best[name], timeit.timeit(way, number=200) / 200)
    base = best_unpack * 1e6
    print(f"one reply of {len(payload)} bytes: a struct of 10 fields holding 100 structs of 6 fields")
    print(f"msgpack.unpackb alone: {base:.1f} µs\n")
    print(f"| {'way':<26} | {'µs to decode':>12} | {'µs with unpackb':>15} | {'x as is':>7} |")
    print(f"|{'-' * 28}|{'-' * 13}:|{'-' * 16}:|{'-' * 8}:|")
    for name, _ in ways:
        decode = best[name] * 1e6
        print(f"| {name:<26} | {decode:>12.1f} | {base + decode:>15.1f} | {(base + decode) / base:>7.2f} |")
    if "msgspec.convert" in best:
        direct = min(timeit.repeat(lambda: decoder.decode(payload), number=200, repeat=options.rounds)) / 200
        print(f"\nmsgspec.msgpack.decode from the bytes straight into the dataclasses: {direct * 1e6:.1f} µs")


if __name__ == "__main__":
    main()
