"""Control ops declared once: `Arg`, `Op` and the `Registry` that checks requests.

An op is a name, typed arguments with their defaults and help, a help line and a
handler, `handler(context, **arguments)`. The registry checks every request
before its handler runs: an unknown op, a missing, extra or ill-typed argument,
or a value outside its choices gets a `RequestError` that says which and why,
never a traceback. Everything that speaks the ops is derived from one registry
(`hwsim.ops.OPS`): the control server's dispatch, the `hwsim ctl` subcommands,
`HwsimClient`'s calls and the catalogue the web page is sent.

A request's argument given as JSON null counts as not given (its default
applies). An argument's command-line form (its option, words for its values,
options that set one value each) is declared with it; nothing here knows the
simulator or argparse.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

Request = dict[str, Any]
Reply = dict[str, Any]
Handler = Callable[..., Reply | None | Awaitable[Reply | None]]
# How `hwsim ctl` prints an answer: (answer, the parsed command line) -> text
Show = Callable[[Reply, Any], str]


class RequestError(ValueError):
    """A request that cannot be carried out; its text goes back to the client."""


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED: Final[Any] = _Required()
KIND_WORDS: Final = {int: "int", float: "float", str: "str", bool: "bool",
                     list: "a list of strings", bytes: "a list of bytes (0..255)"}  # fmt: skip
JSON_TYPES: Final = {int: "integer", float: "number", str: "string", bool: "boolean",
                     list: "strings", bytes: "bytes"}  # fmt: skip


@dataclass(frozen=True)
class Arg:
    """One argument of an op. `kind` is int, float (an int is taken), str, bool, list (of
    strings) or bytes (a JSON list of byte values 0..255). `default` REQUIRED: the request
    must give it; None: optional, left out unless given. `choices`: the values allowed.
    `secret`: never quoted in an error (it may be card data).

    The command line: `flag` replaces the derived option (`--name-with-dashes`), "" makes
    it positional (`nargs` "?" or "+"); `aliases` are further options; `words` maps the
    command line's words to values (`--power on`); `consts` are options each setting one
    value (`--fail` True, `--answer` False). Args of one op that share a `flag` are one
    option taking one value for each (`--set PIN LEVEL`)."""

    name: str
    kind: type
    default: Any = REQUIRED
    help: str = ""
    choices: tuple[Any, ...] = ()
    secret: bool = False
    flag: str | None = None
    aliases: tuple[str, ...] = ()
    words: Mapping[str, Any] | None = None
    consts: Mapping[str, Any] | None = None
    metavar: str | None = None
    nargs: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in KIND_WORDS:
            raise TypeError(f"argument {self.name}: kind {self.kind!r} is not one of "
                            f"{', '.join(k.__name__ for k in KIND_WORDS)}")

    @property
    def required(self) -> bool:
        return self.default is REQUIRED

    def check(self, op: str, value: Any) -> Any:
        """`value` as the handler gets it, or RequestError."""
        kind = self.kind
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if kind is float and isinstance(value, float) and not math.isfinite(value):
            raise RequestError(f"{op}: {self.name!r} must be a finite number")
        if kind is list:
            ok = isinstance(value, list) and all(isinstance(v, str) for v in value)
        elif kind is bytes:
            ok = isinstance(value, list) and all(
                isinstance(b, int) and not isinstance(b, bool) and 0 <= b <= 255 for b in value)
        else:
            ok = isinstance(value, kind) and not (kind is int and isinstance(value, bool))
        if not ok:
            shown = type(value).__name__ if self.secret else repr(value)
            raise RequestError(f"{op}: {self.name!r} must be {KIND_WORDS[kind]}, not {shown}")
        if self.choices and value not in self.choices:
            shown = type(value).__name__ if self.secret else repr(value)
            raise RequestError(f"{op}: {self.name!r} must be one of "
                               f"{', '.join(map(str, self.choices))}, not {shown}")
        return value

    def describe(self) -> dict[str, Any]:
        """The argument as the web page's catalogue gives it (JSON)."""
        out: dict[str, Any] = {"name": self.name, "type": JSON_TYPES[self.kind],
                               "required": self.required, "help": self.help}
        if not self.required:
            out["default"] = self.default
        if self.choices:
            out["choices"] = list(self.choices)
        return out


@dataclass(frozen=True)
class CliOption:
    """An option of an op's command line only (not sent): argparse's add_argument."""

    flags: tuple[str, ...]
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Op:
    """One control op; see the module docstring. `page`: a person at the web page may ask
    for it. `stream`: the server turns the connection into a stream (no handler here).
    The command line: `command` (default the name with dashes), `action` (the word that
    picks this op when several share a command), `show` (how the answer is printed),
    `cli_options` and `cli_prepare` (options of the command line only, and how they turn
    into the request's arguments), `noun` (what an unknown argument is called), `about`
    (a longer description for the command's own help)."""

    name: str
    handler: Handler | None
    args: tuple[Arg, ...]
    help: str
    page: bool = False
    stream: bool = False
    command: str = ""
    action: str | None = None
    show: Show | None = None
    cli_options: tuple[CliOption, ...] = ()
    cli_prepare: Callable[[Any, dict[str, Any]], dict[str, Any]] | None = None
    noun: str = ""
    about: str = ""

    @property
    def arg_names(self) -> tuple[str, ...]:
        return tuple(a.name for a in self.args)

    def arguments(self, request: Mapping[str, Any]) -> dict[str, Any]:
        """The handler's keyword arguments from `request` (its "op" key aside): each
        checked, the defaults filled in; RequestError for anything wrong."""
        unknown = set(request) - set(self.arg_names) - {"op"}
        if unknown:
            known = ", ".join(self.arg_names) or "nothing"
            noun = f"{self.noun} " if self.noun else ""
            raise RequestError(f"{self.name}: unknown {noun}{', '.join(sorted(unknown))}; "
                               f"known: {known}")
        out: dict[str, Any] = {}
        for arg in self.args:
            value = request.get(arg.name)
            if value is None:
                if arg.required:
                    raise RequestError(f"{self.name}: missing {arg.name!r}")
                out[arg.name] = arg.default
            else:
                out[arg.name] = arg.check(self.name, value)
        return out

    def params(self, given: Mapping[str, Any]) -> dict[str, Any]:
        """A request's arguments for a caller (the client): those not None, each a declared
        argument (TypeError for any other: a mistake in the caller's code)."""
        unknown = set(given) - set(self.arg_names)
        if unknown:
            raise TypeError(f"{self.name} takes no argument {', '.join(sorted(unknown))}")
        return {k: v for k, v in given.items() if v is not None}

    def describe(self) -> dict[str, Any]:
        """The op as the web page's catalogue gives it (JSON)."""
        return {"name": self.name, "help": self.help, "args": [a.describe() for a in self.args]}


class Registry:
    """The ops by name, in the order declared."""

    def __init__(self) -> None:
        self._ops: dict[str, Op] = {}

    def op(self, *args: Arg, help: str, page: bool = False, **cli: Any) -> Callable[[Handler], Op]:
        """Declare the decorated function, `fn(context, **arguments)`, as the op of its
        name; the decorator returns the `Op`. Its parameters must be the args' names."""

        def declare(fn: Handler) -> Op:
            params = list(inspect.signature(fn).parameters)[1:]
            if params != [a.name for a in args]:
                raise TypeError(f"op {fn.__name__}: the handler takes {params}, "
                                f"the op declares {[a.name for a in args]}")
            return self.add(Op(fn.__name__, fn, args, help, page, **cli))

        return declare

    def stream(self, name: str, *args: Arg, help: str) -> Op:
        """Declare an op the server answers by streaming on the connection."""
        return self.add(Op(name, None, args, help, stream=True))

    def add(self, op: Op) -> Op:
        if op.name in self._ops:
            raise ValueError(f"op {op.name} declared twice")
        if not op.command:
            op = _replace(op, command=op.name.replace("_", "-"))
        self._ops[op.name] = op
        return op

    def get(self, name: object) -> Op | None:
        return self._ops.get(name) if isinstance(name, str) else None

    def __getitem__(self, name: str) -> Op:
        return self._ops[name]

    def __iter__(self) -> Iterator[Op]:
        return iter(self._ops.values())

    def __len__(self) -> int:
        return len(self._ops)

    def names(self) -> list[str]:
        return list(self._ops)

    def page_ops(self) -> list[Op]:
        return [op for op in self if op.page]

    def catalogue(self) -> dict[str, dict[str, Any]]:
        """The page's ops, by name, with their arguments (JSON for the page's hello)."""
        return {op.name: op.describe() for op in self.page_ops()}


def _replace(op: Op, **changes: Any) -> Op:
    import dataclasses

    return dataclasses.replace(op, **changes)
