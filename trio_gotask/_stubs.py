"""``trio-gotask stubs``: a Python module of typed classes for the Go services of a sidecar
(docs/typed-stubs.md).

The sidecar describes itself: run with ``GOTASK_DESCRIBE=1``, a sidecar built with this version of
the Go package prints one line of JSON, its services, methods and the structs their types use, as
the msgpack library encodes them (go/gotask/describe.go), and exits. `describe_sidecar` gets that
description, `parse_description` reads it, and `render` writes the module: a frozen dataclass per
Go struct, a class per service whose async methods encode the argument and check the reply, and the
private functions that do it.
"""

from __future__ import annotations

import ast
import json
import keyword
import os
import re
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import trio

from ._build import build_sidecar
from ._errors import SidecarError

DESCRIBE_ENV: Final = "GOTASK_DESCRIBE"
DESCRIBE_VERSION: Final = 1
"""The version of the description format this generator reads (``"describe"`` in the JSON)."""
DEFAULT_TIMEOUT: Final = 30.0
LINE: Final = 88
"""The line length the module is laid out for: ruff's and black's default. A line that would be
longer is split with a trailing comma, which keeps it split at any longer line length."""

_REBUILD: Final = "rebuild the sidecar with a gotask package that supports describe mode"


# The description, as read from the sidecar's JSON.


@dataclass(frozen=True)
class GoType:
    """A Go type as the msgpack library encodes it (typeDesc in describe.go)."""

    kind: str  # bool int float string bytes time any error list map pointer struct
    go: str
    elem: GoType | None = None
    key: GoType | None = None
    ref: str = ""
    length: int | None = None


@dataclass(frozen=True)
class GoField:
    key: str
    go_name: str
    doc: str
    type: GoType
    omitempty: bool


@dataclass(frozen=True)
class GoStruct:
    id: str
    name: str
    package: str
    doc: str
    as_array: bool
    fields: tuple[GoField, ...]


@dataclass(frozen=True)
class GoMethod:
    name: str
    doc: str
    stream: bool
    ctx: bool
    arg: GoType
    reply: GoType  # a stream's item type


@dataclass(frozen=True)
class GoService:
    name: str
    doc: str
    methods: tuple[GoMethod, ...]


@dataclass(frozen=True)
class Description:
    services: tuple[GoService, ...]
    structs: dict[str, GoStruct]


_KINDS: Final = frozenset(
    {"bool", "int", "float", "string", "bytes", "time", "any", "error", "list", "map", "pointer", "struct"}
)


class _Malformed(Exception):
    pass


def _get(obj: Any, key: str, kind: type, where: str) -> Any:
    if type(obj) is not dict:
        raise _Malformed(f"{where}: expected an object, got {type(obj).__name__}")
    value = obj.get(key)
    if type(value) is not kind:
        raise _Malformed(f"{where}.{key}: expected {kind.__name__}, got {type(value).__name__}")
    return value


def _type(obj: Any, where: str, structs: set[str]) -> GoType:
    kind = _get(obj, "kind", str, where)
    if kind not in _KINDS:
        raise _Malformed(f"{where}.kind: unknown kind {kind!r}")
    elem = key = None
    if kind in ("list", "map", "pointer"):
        elem = _type(obj.get("elem"), f"{where}.elem", structs)
    if kind == "map":
        key = _type(obj.get("key"), f"{where}.key", structs)
    ref = ""
    if kind == "struct":
        ref = _get(obj, "ref", str, where)
        if ref not in structs:
            raise _Malformed(f"{where}.ref: no struct {ref!r} in structs")
    length = obj.get("len")
    return GoType(kind, str(obj.get("go", "")), elem, key, ref, length if type(length) is int else None)


def parse_description(obj: Any) -> Description:
    """The `Description` that the JSON value ``obj`` holds; `SidecarError` if it is malformed."""
    try:
        version = _get(obj, "describe", int, "$")
        if version != DESCRIBE_VERSION:
            raise SidecarError(
                f"the sidecar's description is of version {version}, and this trio-gotask reads "
                f"version {DESCRIBE_VERSION}: use a trio-gotask as recent as the sidecar's gotask package"
            )
        raw_structs = _get(obj, "structs", list, "$")
        ids = {s["id"] for s in raw_structs if type(s) is dict and type(s.get("id")) is str}
        structs = {}
        for i, s in enumerate(raw_structs):
            where = f"$.structs[{i}]"
            fields = tuple(
                GoField(
                    _get(f, "key", str, f"{where}.fields[{j}]"),
                    str(f.get("go_name", "")),
                    str(f.get("doc", "")),
                    _type(f.get("type"), f"{where}.fields[{j}].type", ids),
                    f.get("omitempty") is True,
                )
                for j, f in enumerate(_get(s, "fields", list, where))
            )
            struct = GoStruct(
                _get(s, "id", str, where),
                str(s.get("name", "")),
                str(s.get("package", "")),
                str(s.get("doc", "")),
                s.get("as_array") is True,
                fields,
            )
            structs[struct.id] = struct
        services = []
        for i, s in enumerate(_get(obj, "services", list, "$")):
            where = f"$.services[{i}]"
            methods = []
            for j, m in enumerate(_get(s, "methods", list, where)):
                at = f"{where}.methods[{j}]"
                kind = _get(m, "kind", str, at)
                if kind not in ("call", "stream"):
                    raise _Malformed(f"{at}.kind: unknown kind {kind!r}")
                methods.append(
                    GoMethod(
                        _get(m, "name", str, at),
                        str(m.get("doc", "")),
                        kind == "stream",
                        m.get("ctx") is True,
                        _type(m.get("arg"), f"{at}.arg", ids),
                        _type(m.get("reply"), f"{at}.reply", ids),
                    )
                )
            services.append(GoService(_get(s, "name", str, where), str(s.get("doc", "")), tuple(methods)))
    except _Malformed as exc:
        raise SidecarError(f"the sidecar's description is malformed: {exc}") from None
    return Description(tuple(services), structs)


# Running the sidecar in describe mode.


NO_DESCRIPTION: Final = (
    "the sidecar printed no description within {seconds:g} seconds: a sidecar built with an older "
    f"gotask package serves instead; {_REBUILD} (or make its main reach gotask.Run sooner)"
)
"""`SidecarError`'s message when the deadline around `describe_sidecar` passes."""


async def sidecar_binary(sidecar: str | os.PathLike[str]) -> Path:
    """``sidecar`` itself, or if it is a Go main package's folder, its build (as `open_gotask`
    builds one); `SidecarError` if it is neither or the build fails."""
    path = trio.Path(sidecar)
    if await path.is_dir():
        return await build_sidecar(sidecar)
    if not await path.exists():
        raise SidecarError(f"{os.fspath(sidecar)!r} is neither a Go package folder nor a sidecar")
    return Path(sidecar)


DESCRIPTION_LIMIT: Final = 64 << 20
"""The most a sidecar may print in describe mode: a description is a few KiB to a few MiB."""


async def describe_sidecar(binary: str | os.PathLike[str]) -> Any:
    """Run the built sidecar ``binary`` in describe mode and return its description, JSON.

    Raises `SidecarError` when it cannot be started, when it exits without a description (with
    the end of its stderr), or when it serves instead (a handshake on its stdout). A sidecar
    built with a gotask package from before describe mode serves, or stops at once saying it
    was not launched by a client; one whose main waits for something before gotask.Run waits:
    put a deadline around this call, and say `NO_DESCRIPTION` when it passes.
    """
    env = {k: v for k, v in os.environ.items() if k != "GOTASK_MAGIC_COOKIE"}
    env[DESCRIBE_ENV] = "1"
    out = bytearray()
    err = bytearray()
    served = False
    try:
        process = await trio.lowlevel.open_process(
            [os.fspath(binary)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )
    except OSError as exc:
        raise SidecarError(f"cannot start {os.fspath(binary)!r} in describe mode: {exc}") from exc
    try:
        assert process.stdout is not None and process.stderr is not None
        stdout, stderr = process.stdout, process.stderr

        async def drain_stderr() -> None:
            while chunk := await stderr.receive_some():
                err.extend(chunk[: max(0, 65536 - len(err))])

        async with trio.open_nursery() as nursery:
            nursery.start_soon(drain_stderr)
            while chunk := await stdout.receive_some():
                start = max(0, len(out) - 1)  # a handshake's newline may end the last chunk
                out.extend(chunk)
                if out.startswith(b"gotask|") or out.find(b"\ngotask|", start) >= 0:
                    served = True  # the handshake line of a sidecar that serves
                    nursery.cancel_scope.cancel()
                    break
                if len(out) > DESCRIPTION_LIMIT:
                    nursery.cancel_scope.cancel()
                    break
        if not served and len(out) <= DESCRIPTION_LIMIT:
            await process.wait()
    finally:
        if process.returncode is None:
            process.kill()
            with trio.CancelScope(shield=True):
                await process.wait()
    tail = err.decode("utf-8", "replace").strip()[-2000:]
    if len(out) > DESCRIPTION_LIMIT:
        raise SidecarError(
            f"the sidecar printed more than {DESCRIPTION_LIMIT >> 20} MiB to stdout in describe "
            f"mode without ending: is it a gotask sidecar? {_REBUILD}"
        )
    if served:
        raise SidecarError(f"the sidecar served instead of describing itself: {_REBUILD}")
    line = next((x for x in reversed(out.splitlines()) if x.startswith(b'{"describe":')), None)
    if process.returncode != 0 or line is None:
        old = "this program is a trio-gotask sidecar" in tail
        raise SidecarError(
            f"the sidecar exited with status {process.returncode} without a description"
            + (f": {_REBUILD}" if old else ""),
            returncode=process.returncode,
            stderr_tail=tail,
        )
    try:
        return json.loads(line)
    except ValueError as exc:
        raise SidecarError(f"the sidecar's description is not JSON: {exc}") from None


# Names.

_IDENT: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_BUILTINS_USED: Final = frozenset(
    {
        "bool",
        "bytes",
        "dict",
        "float",
        "int",
        "list",
        "str",
        "type",
        "object",
        "range",
        "None",
        "True",
        "False",
    }
)
_IMPORTED: Final = frozenset(
    {
        "annotations",
        "AbstractAsyncContextManager",
        "Any",
        "TYPE_CHECKING",
        "dataclass",
        "datetime",
        "field",
        "timezone",
        "trio",
        "trio_gotask",
        "_stubs",
        "_ZERO_TIME",
        # the helpers that check scalars
        "_bool",
        "_int",
        "_float",
        "_str",
        "_bytes",
        "_datetime",
    }
)


def segment(key: str) -> str:
    """The path segment of a struct field (trio_gotask.stubs.segment, for a string)."""
    return f".{key}" if _IDENT.match(key) else f"[{json.dumps(key, ensure_ascii=False)}]"


def literal(text: str) -> str:
    """``text`` as a Python string literal, quoted as ruff format quotes it."""
    quoted = json.dumps(text, ensure_ascii=False)
    if text.count('"') > text.count("'"):
        return "'" + quoted[1:-1].replace('\\"', '"').replace("'", "\\'") + "'"
    return quoted


def identifier(text: str) -> str:
    """``text`` made into a Python identifier: other characters become ``_``, a keyword gets a
    trailing ``_``, and a name that would not be an identifier (or that Python would mangle, as
    it does ``__x`` in a class) gets a leading ``f_``."""
    name = re.sub(r"\W", "_", text, flags=re.ASCII)
    if not name or name[0].isdigit() or name.startswith("__"):
        name = "f_" + name
    if keyword.iskeyword(name) or name == "_":
        name += "_"
    return name


def class_name(go_name: str) -> str:
    """A Go type's name as a Python class name: ``Page[main.Item]`` is ``PageItem``."""
    base, _, args = go_name.partition("[")
    parts = [base] + [re.split(r"[./]", a)[-1] for a in re.findall(r"[\w./]+", args)]
    return identifier("".join(p[:1].upper() + p[1:] if i else p for i, p in enumerate(parts)))


class _Names:
    """Hands out the module's names, each once."""

    def __init__(self) -> None:
        self.taken: set[str] = set(_IMPORTED) | _BUILTINS_USED | set(keyword.kwlist)

    def take(self, *wanted: str) -> str:
        """The first of ``wanted`` that is free, else the last with a number."""
        for name in wanted:
            if name not in self.taken:
                self.taken.add(name)
                return name
        n = 2
        while f"{wanted[-1]}{n}" in self.taken:
            n += 1
        self.taken.add(f"{wanted[-1]}{n}")
        return f"{wanted[-1]}{n}"


# Layout: lines that ruff format leaves as they are.


def _fits(text: str) -> bool:
    return len(text) <= LINE


def call_lines(indent: str, head: str, args: Sequence[str], tail: str) -> list[str]:
    """``head`` + the arguments + ``tail`` on one line if it fits, else one argument a line
    with a trailing comma."""
    one = f"{indent}{head}{', '.join(args)}{tail}"
    if _fits(one) or not args:
        return [one]
    return [f"{indent}{head}", *(f"{indent}    {a}," for a in args), f"{indent}{tail}"]


def docstring(text: str, indent: str) -> list[str]:
    """``text`` as a docstring at ``indent``, laid out as ruff formats docstrings."""
    text = text.expandtabs(4).replace("\\", "\\\\").replace('"""', '\\"\\"\\"')
    lines = [line.rstrip() for line in text.strip().splitlines()]
    if lines and lines[-1].endswith('"'):
        lines[-1] += " "
    if len(lines) == 1:
        return [f'{indent}"""{lines[0]}"""']
    out = [f'{indent}"""{lines[0]}']
    out += [f"{indent}{line}" if line else "" for line in lines[1:]]
    return [*out, f'{indent}"""']


# Python types.

_SCALARS: Final = {
    "bool": ("bool", "False"),
    "int": ("int", "0"),
    "float": ("float", "0.0"),
    "string": ("str", '""'),
    "bytes": ("bytes", 'b""'),
    "time": ("datetime", "_ZERO_TIME"),
}
_ANY: Final = GoType("any", "any")


def _flat(t: GoType) -> tuple[GoType, bool]:
    """``t`` without its pointers, and whether it may be nil (None in Python)."""
    nullable = False
    while t.kind == "pointer":
        assert t.elem is not None
        t, nullable = t.elem, True
    return t, nullable or t.kind in ("any", "error")


def _slug(shape: str) -> str:
    return re.sub(r"\W+", "_", shape.replace(" | None", " opt")).strip("_")


class _Module:
    """Writes the module for one description."""

    def __init__(self, description: Description) -> None:
        self.d = description
        self.names = _Names()
        self.classes: dict[str, str] = {}  # struct id, or "service NAME" -> class name
        self.decoders: dict[str, str] = {}  # shape -> its decoder's name
        self.encoders: dict[str, str] = {}  # shape -> its encoder's name
        self.code: dict[str, list[str]] = {}  # a decoder's or encoder's name -> its lines
        self.scalars: set[str] = set()  # the kinds whose checking helper is used
        self.constants: dict[str, str] = {}  # name -> value, for the decoders
        self.aliases: dict[str, str] = {}  # a name hidden in some class -> its alias

    # Which Python type a Go type is.

    def shape(self, t: GoType) -> str:
        """The Python type of ``t``, as written at module level; also its decoder's key."""
        inner, nullable = _flat(t)
        if inner.kind in _SCALARS:
            text = _SCALARS[inner.kind][0]
        elif inner.kind == "any":
            return "Any"
        elif inner.kind == "error":
            return "str | None"
        elif inner.kind == "list":
            assert inner.elem is not None
            text = f"list[{self.shape(inner.elem)}]"
        elif inner.kind == "map":
            assert inner.key is not None and inner.elem is not None
            text = f"dict[{self.shape(self.key_type(inner.key))}, {self.shape(inner.elem)}]"
        else:
            text = self.classes[inner.ref]
        return f"{text} | None" if nullable else text

    def key_type(self, t: GoType) -> GoType:
        """A map key's type: a scalar, or any (Go would not send other keys to Python)."""
        inner, nullable = _flat(t)
        return inner if inner.kind in _SCALARS and not nullable else _ANY

    def annotation(self, t: GoType, hidden: dict[str, str]) -> str:
        """`shape`, with the names that a class's own members hide replaced by aliases."""
        return re.sub(r"\w+", lambda m: hidden.get(m[0], m[0]), self.shape(t))

    def zero(self, t: GoType) -> str:
        """The Go zero value of ``t``, as an expression."""
        inner, nullable = _flat(t)
        if nullable:
            return "None"
        if inner.length and inner.kind == "bytes":
            return f"bytes({inner.length})"
        if inner.kind in _SCALARS:
            return _SCALARS[inner.kind][1]
        if inner.kind == "list":
            assert inner.elem is not None
            if inner.length:
                return f"[{self.zero(inner.elem)} for _ in range({inner.length})]"
            return "[]"
        if inner.kind == "map":
            return "{}"
        return f"{self.classes[inner.ref]}()"

    def default(self, t: GoType) -> str:
        """The Go zero value of ``t`` as a dataclass field's default."""
        inner, nullable = _flat(t)
        if nullable:
            return "None"
        if inner.length and inner.kind == "bytes":
            return f'b"\\x00" * {inner.length}'
        if inner.kind in _SCALARS:
            return _SCALARS[inner.kind][1]
        if inner.kind == "list" and not inner.length:
            return "field(default_factory=list)"
        if inner.kind == "map":
            return "field(default_factory=dict)"
        if inner.kind == "struct":
            return f"field(default_factory={self.classes[inner.ref]})"
        return f"field(default_factory=lambda: {self.zero(inner)})"

    # Naming the structs, in the order the services reach them.

    def name_structs(self) -> tuple[list[str], dict[str, str]]:
        """Give each struct reached a class name. Return their ids, each after the structs it
        holds by value (whose classes its defaults construct), and a docstring for each unnamed
        one: which method's argument, reply or items it is."""
        hints: dict[str, str] = {}
        roles: dict[str, dict[str, list[str]]] = {}  # unnamed struct -> "argument" -> methods
        order: list[str] = []

        def reach(t: GoType, hint: str, role: tuple[str, str] | None) -> None:
            if t.kind in ("list", "map", "pointer"):
                assert t.elem is not None
                reach(t.elem, hint, role)
                if t.key is not None:
                    reach(t.key, hint, role)
            elif t.kind == "struct":
                struct = self.d.structs[t.ref]
                if role and not struct.name:
                    roles.setdefault(t.ref, {}).setdefault(role[0], []).append(role[1])
                if t.ref in hints:
                    return
                hints[t.ref] = hint
                order.append(t.ref)
                for f in struct.fields:
                    reach(f.type, class_name(struct.name or hint) + f.go_name.replace(".", ""), None)

        for service in self.d.services:
            for m in service.methods:
                full = f"{service.name}.{m.name}"
                reach(m.arg, f"{m.name}Args", ("argument", full))
                what = "items" if m.stream else "reply"
                reach(m.reply, f"{m.name}{what.title().rstrip('s')}", (what, full))
        docs = {
            ref: " ".join(f"The {what} of {' and '.join(methods)}." for what, methods in by_role.items())
            for ref, by_role in roles.items()
        }
        for ref in order:
            struct = self.d.structs[ref]
            if struct.name:
                wanted = class_name(struct.name)
                package = class_name(struct.package.rsplit("/", 1)[-1].title()) if struct.package else ""
                self.classes[ref] = self.names.take(wanted, package + wanted)
            else:
                self.classes[ref] = self.names.take(class_name(hints[ref]))
        placed: list[str] = []
        begun: set[str] = set()

        def place(ref: str) -> None:
            if ref in begun:
                return  # placed, or being placed: a struct cannot hold itself by value
            begun.add(ref)
            for f in self.d.structs[ref].fields:
                inner, nullable = _flat(f.type)
                if inner.kind == "struct" and not nullable:
                    place(inner.ref)
            placed.append(ref)

        for ref in order:
            place(ref)
        return placed, docs

    # Decoding.

    def scalar(self, kind: str) -> str:
        """The name of the helper that checks a scalar of ``kind``."""
        self.scalars.add(kind)
        return f"_{_SCALARS[kind][0]}"

    def decoder(self, t: GoType) -> str:
        """The name of a function of one argument that decodes ``t``, written if need be."""
        inner, nullable = _flat(t)
        if inner.kind in _SCALARS and not nullable:
            return self.scalar(inner.kind)
        key = self.shape(t)
        name = self.decoders.get(key)
        if name is None:
            struct = inner.kind == "struct" and not nullable
            name = self.names.take(f"_decode_{self.classes[inner.ref] if struct else _slug(key)}")
            self.decoders[key] = name
            self.code[name] = self.struct_decoder(name, inner) if struct else self.container_decoder(name, t)
        return name

    def item(self, t: GoType, var: str) -> str:
        """An expression that decodes ``var`` of type ``t``: no call for a valid scalar."""
        inner, nullable = _flat(t)
        if inner.kind == "any":
            return var
        if inner.kind in _SCALARS or inner.kind == "error":
            kind = "string" if inner.kind == "error" else inner.kind
            test = f"type({var}) is {_SCALARS[kind][0]}"
            if nullable:
                test = f"{var} is None or {test}"
            return f"{var} if {test} else {self.scalar(kind)}({var})"
        return f"{self.decoder(t)}({var})"

    def checker(self, t: GoType) -> str:
        """What `Mismatch.at_index` and `Mismatch.at_key` run to find the bad value."""
        return "None" if _flat(t)[0].kind == "any" else self.decoder(t)

    def container_decoder(self, name: str, t: GoType) -> list[str]:
        inner, nullable = _flat(t)
        lines = [f"def {name}(obj: Any) -> {self.shape(t)}:"]
        if nullable:
            return [
                *lines,
                "    if obj is None:",
                "        return None",
                f"    return {self.item(inner, 'obj')}",
            ]
        if inner.kind == "list":
            assert inner.elem is not None
            empty, python, each, loop = "[]", "list", self.item(inner.elem, "x"), "x in obj"
            checkers = ["obj", self.checker(inner.elem)]
            fix = "at_index"
        else:
            assert inner.key is not None and inner.elem is not None
            key = self.key_type(inner.key)
            empty, python, loop = "{}", "dict", "k, v in obj.items()"
            each = f"{self.item(key, 'k')}: {self.item(inner.elem, 'v')}"
            checkers = ["obj", self.checker(key), self.checker(inner.elem)]
            fix = "at_key"
        lines += [
            f"    if type(obj) is not {python}:",
            "        if obj is None:",
            f"            return {empty}",
            f'        raise _stubs.Mismatch("{python}", obj)',
        ]
        if each in ("x", "k: v"):
            return [*lines, "    return obj"]
        body = [f"        return {empty[0]}{each} for {loop}{empty[1]}"]
        if not _fits(body[0]):
            # A comprehension too long for one line, which ruff would join again at a longer
            # line length: a loop instead.
            body = [f"        out: {self.shape(t)} = {empty}", f"        for {loop}:"]
            if inner.kind == "list":
                assert inner.elem is not None
                body += [*self.fix_lines(inner.elem, "x", "            "), "            out.append(x)"]
            else:
                assert inner.key is not None and inner.elem is not None
                body += self.fix_lines(self.key_type(inner.key), "k", "            ")
                body += [*self.fix_lines(inner.elem, "v", "            "), "            out[k] = v"]
            body.append("        return out")
        return [
            *lines,
            "    try:",
            *body,
            "    except _stubs.Mismatch as e:",
            *call_lines("        ", f"raise e.{fix}(", checkers, ") from None"),
        ]

    def fix_lines(self, t: GoType, var: str, indent: str) -> list[str]:
        """Statements that decode ``var`` of type ``t`` in place."""
        inner, nullable = _flat(t)
        if inner.kind == "any":
            return []
        if inner.kind in _SCALARS or inner.kind == "error":
            kind = "string" if inner.kind == "error" else inner.kind
            test = f"type({var}) is not {_SCALARS[kind][0]}"
            if nullable:
                test = f"{var} is not None and {test}"
            return [f"{indent}if {test}:", f"{indent}    {var} = {self.scalar(kind)}({var})"]
        return [f"{indent}{var} = {self.decoder(t)}({var})"]

    def struct_decoder(self, name: str, t: GoType) -> list[str]:
        struct = self.d.structs[t.ref]
        cls = self.classes[struct.id]
        lines = [f"def {name}(obj: Any) -> {cls}:", "    if type(obj) is not dict:"]
        if struct.as_array:
            keys = self.names.take(f"_KEYS_{cls}")
            items = [literal(f.key) for f in struct.fields]
            self.constants[keys] = f"({items[0]},)" if len(items) == 1 else f"({', '.join(items)})"
            lines += [
                f"        if type(obj) is list and len(obj) == {len(items)}:",
                f"            obj = dict(zip({keys}, obj, strict=True))",
                "        elif obj is None:",
                f"            return {cls}()",
                "        else:",
                f'            raise _stubs.Mismatch("list or dict ({cls})", obj)',
            ]
        else:
            lines += [
                "        if obj is None:",
                f"            return {cls}()",
                f'        raise _stubs.Mismatch("dict ({cls})", obj)',
            ]
        fill = [f"    value = {cls}.__new__({cls})"]
        for f, attr in zip(struct.fields, self.attributes(struct), strict=True):
            local = f"v_{attr}"
            setter = self.names.take(f"_set_{cls}_{attr}")
            self.constants[setter] = f"{cls}.__dict__[{literal(attr)}].__set__"
            fill += call_lines("    ", f"{setter}(", ["value", local], ")")
            key, seg = literal(f.key), literal(segment(f.key))
            inner, nullable = _flat(f.type)
            if inner.kind in _SCALARS and not nullable:
                lines += call_lines("    ", f"{local} = obj.get(", [key, self.zero(inner)], ")")
                lines += [f"    if type({local}) is not {_SCALARS[inner.kind][0]}:"]
                lines += call_lines("        ", f"{local} = {self.scalar(inner.kind)}(", [local, seg], ")")
                continue
            lines += call_lines("    ", f"{local} = obj.get(", [key], ")")
            if inner.kind == "any":
                continue
            if inner.kind in _SCALARS or inner.kind == "error":
                kind = "string" if inner.kind == "error" else inner.kind
                lines += [f"    if {local} is not None and type({local}) is not {_SCALARS[kind][0]}:"]
                lines += call_lines("        ", f"{local} = {self.scalar(kind)}(", [local, seg], ")")
                continue
            pad = "    "
            if nullable:
                lines += [f"    if {local} is not None:"]
                pad = "        "
            lines += [
                f"{pad}try:",
                f"{pad}    {local} = {self.decoder(inner)}({local})",
                f"{pad}except _stubs.Mismatch as e:",
                *call_lines(f"{pad}    ", "raise e.at(", [seg], ") from None"),
            ]
        # Filled slot by slot: a frozen dataclass's __init__ takes three times as long
        # (benchmarks/typed.py), and every field is set here.
        return [*lines, *fill, "    return value"]

    def scalar_helper(self, kind: str) -> list[str]:
        py, zero = _SCALARS[kind]
        lines = [
            f'def _{py}(value: object, where: str = "") -> {py}:',
            f"    if type(value) is {py}:",
            "        return value",
        ]
        if kind == "float":
            lines += ["    if type(value) is int:", "        return float(value)"]
        return [
            *lines,
            "    if value is None:",
            f"        return {zero}",
            f'    raise _stubs.Mismatch("{py}", value).at(where)',
        ]

    # Encoding.

    def needs_encoding(self, t: GoType) -> bool:
        """Whether a value of ``t`` may hold a dataclass, which msgpack cannot send as it is."""
        inner, _ = _flat(t)
        if inner.kind in ("list", "map"):
            assert inner.elem is not None
            return self.needs_encoding(inner.elem)
        return inner.kind == "struct"

    def encode(self, t: GoType, expr: str) -> str:
        """An expression that makes ``expr`` of type ``t`` into what msgpack sends."""
        return f"{self.encoder(t)}({expr})" if self.needs_encoding(t) else expr

    def encoder(self, t: GoType) -> str:
        key = self.shape(t)
        name = self.encoders.get(key)
        if name is not None:
            return name
        inner, nullable = _flat(t)
        struct = inner.kind == "struct" and not nullable
        name = self.names.take(f"_encode_{self.classes[inner.ref] if struct else _slug(key)}")
        self.encoders[key] = name
        if nullable:
            body = [f"    return None if value is None else {self.encoder(inner)}(value)"]
        elif inner.kind == "list":
            assert inner.elem is not None
            body = [f"    return [{self.encode(inner.elem, 'x')} for x in value]"]
        elif inner.kind == "map":
            assert inner.elem is not None
            body = [f"    return {{k: {self.encode(inner.elem, 'v')} for k, v in value.items()}}"]
        else:
            s = self.d.structs[inner.ref]
            items = [
                f"{literal(f.key)}: {self.encode(f.type, 'value.' + attr)}"
                for f, attr in zip(s.fields, self.attributes(s), strict=True)
            ]
            body = (
                ["    return {", *(f"        {item}," for item in items), "    }"]
                if items
                else ["    return {}"]
            )
        returns = "dict[str, Any]" if struct else "Any"
        self.code[name] = [f"def {name}(value: {key}) -> {returns}:", *body]
        return name

    # The classes.

    def attributes(self, struct: GoStruct) -> list[str]:
        """The attribute names of a struct's fields: their keys made into identifiers, told apart."""
        taken: set[str] = set()
        out = []
        for f in struct.fields:
            name = base = identifier(f.key)
            n = 2
            while name in taken:
                name, n = f"{base}_{n}", n + 1
            taken.add(name)
            out.append(name)
        return out

    def hidden(self, members: set[str], annotations: Sequence[str]) -> dict[str, str]:
        """For a class whose members are ``members``: the names its ``annotations`` use that a
        member hides (mypy reads a class's names first), each with a module-level alias."""
        used = {name for text in annotations for name in re.findall(r"\w+", text)}
        out = {}
        for name in sorted(used & members):
            if name not in self.aliases:
                self.aliases[name] = self.names.take(f"_{name}", f"_{name}_")
            out[name] = self.aliases[name]
        return out

    def struct_class(self, struct: GoStruct, doc: str) -> list[str]:
        attrs = self.attributes(struct)
        hidden = self.hidden(set(attrs), [self.shape(f.type) for f in struct.fields])
        body: list[str] = []
        if struct.doc or doc:
            body += docstring(struct.doc or doc, "    ")
        documented = bool(body)
        for f, attr in zip(struct.fields, attrs, strict=True):
            text = f.doc
            if f.key != attr:
                text = f"{text}\n\nSent as {f.key!r}." if text else f"Sent as {f.key!r}."
            if body and (documented or text):
                body.append("")
            documented = bool(text)
            default = self.default(f.type)
            head = f"    {attr}: {self.annotation(f.type, hidden)} = "
            if default.startswith("field(") and not _fits(head + default):
                body += call_lines("", head + "field(", [default[len("field(") : -1]], ")")
            else:
                body.append(head + default)
            if text:
                body += docstring(text, "    ")
        cls = self.classes[struct.id]
        return ["@dataclass(frozen=True, slots=True, kw_only=True)", f"class {cls}:", *(body or ["    pass"])]

    def service_class(self, service: GoService) -> list[str]:
        methods = {m.name: identifier(m.name) for m in service.methods}
        annotations = [self.shape(m.arg) for m in service.methods] + [
            self.shape(m.reply) for m in service.methods
        ]
        annotations.append("AbstractAsyncContextManager trio int None")
        hidden = self.hidden(set(methods.values()), annotations)
        lines = [
            f"class {self.classes[f'service {service.name}']}:",
            *docstring(service.doc or f"The methods of the Go service {service.name}.", "    "),
            "",
            '    __slots__ = ("_gotask",)',
            "",
            "    def __init__(self, gotask: trio_gotask.GoTask) -> None:",
            "        self._gotask = gotask",
        ]
        for m in service.methods:
            lines += ["", *self.method(service, m, methods[m.name], hidden)]
        return lines

    def method(self, service: GoService, m: GoMethod, name: str, hidden: dict[str, str]) -> list[str]:
        full = literal(f"{service.name}.{m.name}")
        arg = self.annotation(m.arg, hidden)
        params = ["self", f"arg: {arg} = None" if _flat(m.arg)[1] else f"arg: {arg}"]
        if m.stream:
            params += ["*", f"window: {hidden.get('int', 'int')} | None = None"]
            channel = f"{hidden.get('trio', 'trio')}.abc.ReceiveChannel[{self.annotation(m.reply, hidden)}]"
            manager = hidden.get("AbstractAsyncContextManager", "AbstractAsyncContextManager")
            lines = call_lines("    ", f"def {name}(", params, f") -> {manager}[{channel}]:")
        else:
            lines = call_lines(
                "    ", f"async def {name}(", params, f") -> {self.annotation(m.reply, hidden)}:"
            )
        if m.doc:
            lines += docstring(m.doc, "        ")
        sent = self.encode(m.arg, "arg")
        if m.stream:
            args = ["self._gotask", full, sent, self.checker(m.reply), "window"]
            return [*lines, *call_lines("        ", "return _stubs.stream(", args, ")")]
        if _flat(m.reply)[0].kind == "any":
            return [*lines, *call_lines("        ", "return await self._gotask.call(", [full, sent], ")")]
        return [
            *lines,
            *call_lines("        ", "reply = await self._gotask.call(", [full, sent], ")"),
            *call_lines("        ", "return _stubs.decoded(", [full, "reply", self.decoder(m.reply)], ")"),
        ]

    # The whole module.

    def render(self, source: str, command: str) -> str:
        for service in self.d.services:
            self.classes[f"service {service.name}"] = self.names.take(identifier(service.name))
        structs, docs = self.name_structs()
        blocks = [self.struct_class(self.d.structs[ref], docs.get(ref, "")) for ref in structs]
        blocks += [self.service_class(service) for service in self.d.services]
        private: list[list[str]] = [self.scalar_helper(k) for k in _SCALARS if k in self.scalars]
        private += [self.code[name] for name in sorted(self.code)]
        body = []
        for block in blocks:
            body += ["", "", *block]
        if private or self.constants:
            body += ["", "", "# Encoding and decoding, private to this module."]
            body += [f"{name} = {value}" for name, value in sorted(self.constants.items())]
            for block in private:
                body += ["", "", *block]
        if self.aliases:
            body += ["", "", "# Names for the annotations of classes that have a member of the same name."]
            body += [f"{alias} = {name}" for name, alias in sorted(self.aliases.items())]
        used = {node.id for node in ast.walk(ast.parse("\n".join(body))) if isinstance(node, ast.Name)}
        if "_ZERO_TIME" in used:
            body[:0] = ["", "_ZERO_TIME = datetime(1, 1, 1, tzinfo=timezone.utc)"]
            used |= {"datetime", "timezone"}
        services = ", ".join(s.name for s in self.d.services) or "none"
        doc = f"Typed classes for the Go services of {source}: {services}.\n\n"
        doc += f"Generated by trio-gotask stubs from {source}; do not edit."
        if command:
            doc += f" Generate it again with:\n\n    {command}"
        head = [*docstring(doc, ""), "", "from __future__ import annotations", "", *self.imports(used)]
        return "\n".join(head + body) + "\n"

    @staticmethod
    def imports(used: set[str]) -> list[str]:
        std = []
        if "AbstractAsyncContextManager" in used:
            std.append("from contextlib import AbstractAsyncContextManager")
        if "dataclass" in used:
            std.append("from dataclasses import dataclass" + (", field" if "field" in used else ""))
        time = [name for name in ("datetime", "timezone") if name in used]
        if time:
            std.append(f"from datetime import {', '.join(time)}")
        typing = [
            name
            for name in ("TYPE_CHECKING", "Any")
            if name in used or (name == "TYPE_CHECKING" and "trio" in used)
        ]
        if typing:
            std.append(f"from typing import {', '.join(typing)}")
        lines = [*std, "", "import trio_gotask"]
        if "_stubs" in used:
            lines.append("import trio_gotask.stubs as _stubs")
        if "trio" in used:
            lines += ["", "if TYPE_CHECKING:", "    import trio"]
        return lines if std else lines[1:]


def render(description: Description, *, source: str, command: str = "") -> str:
    """The text of the module of typed classes for ``description``. ``source`` names the sidecar
    in the module's docstring, and ``command`` is how to generate it again. The same
    description gives the same text, laid out as ruff format lays it out."""
    return _Module(description).render(source, command)
