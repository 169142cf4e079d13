"""The command-line vocabulary of every package: one error type, one parser, flags from dataclasses.

Bad input ends a command with one line ``error: ...`` on stderr and exit code 2, never a
traceback. A dataclass field becomes a flag through ``add_fields``; its help text is the field's
``metadata["help"]`` (``option(default, help)`` writes both).
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from collections.abc import Callable, Iterable
from fractions import Fraction
from typing import Any, NoReturn


class UsageError(ValueError):
    """Input the user can fix: the command says it in one line and exits with code 2."""


class Parser(argparse.ArgumentParser):
    """argparse, but a bad command line is one line on stderr (exit code 2), not a usage block."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def option(default: Any = dataclasses.MISSING, *, help: str,
           parse: Callable[[str], Any] | None = None) -> Any:
    """A dataclass field with its help text (which should say its unit), for ``add_fields``;
    ``parse`` reads its flag's text where the annotation's type cannot (e.g. '10G' for a count)."""
    metadata = {"help": help, **({"parse": parse} if parse is not None else {})}
    return dataclasses.field(default=default, metadata=metadata)


def number(text: str) -> float:
    """'0.1', '2e-4', '8/255', '0.8/255' (pixel budgets read naturally as fractions)."""
    try:
        parts = [Fraction(part.strip()) for part in text.split("/")]
        if len(parts) > 2:
            raise ValueError(text)
        return float(parts[0] / parts[1]) if len(parts) == 2 else float(parts[0])
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(f"not a number: {text!r} (e.g. 0.1, 2e-4, 8/255, "
                                         "0.8/255)") from None


def count(text: str) -> int:
    """A parameter or MAC count: '36M', '1.5G', '500K', '2_000_000'."""
    from .budget import parse_budget

    try:
        return parse_budget(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"{text!r} is not a count ({e})") from None


def integer(text: str) -> int:
    try:
        return int(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None


def boolean(text: str) -> bool:
    value = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}
    try:
        return value[text.strip().lower()]
    except KeyError:
        raise argparse.ArgumentTypeError(f"not true or false: {text!r}") from None


_SCALARS: dict[Any, Callable[[str], Any]] = {int: integer, float: number, str: str, bool: boolean}


def add_fields(parser: argparse.ArgumentParser | argparse._ArgumentGroup, cls: type, *,
               skip: Iterable[str] = (), only: Iterable[str] | None = None, prefix: str = "") -> None:
    """One ``--{prefix}{field-name}`` flag per field of the dataclass ``cls``.

    The value is parsed by the field's annotation (int, float, str, bool, ``X | None`` accepting
    'none', tuples as comma lists). No default is set: only flags the user gave reach the
    namespace, so ``cls(**given(args, cls))`` keeps the class's own defaults and validation.
    """
    hints = typing.get_type_hints(cls)
    wanted = set(only) if only is not None else None
    for f in dataclasses.fields(cls):
        if f.name in skip or (wanted is not None and f.name not in wanted):
            continue
        parse = _parser_of(hints[f.name], f.metadata.get("parse"))
        parser.add_argument(f"--{prefix}{f.name}".replace("_", "-"), dest=_dest(prefix, f.name),
                            type=parse, default=argparse.SUPPRESS, help=_help(f))


def given(args: argparse.Namespace, cls: type, *, prefix: str = "") -> dict[str, Any]:
    """The fields of ``cls`` the user gave on the command line (flags from ``add_fields``)."""
    return {f.name: getattr(args, _dest(prefix, f.name)) for f in dataclasses.fields(cls)
            if hasattr(args, _dest(prefix, f.name))}


def _dest(prefix: str, name: str) -> str:
    return f"{prefix}{name}".replace("-", "_")


def _help(f: dataclasses.Field) -> str:
    if f.default is not dataclasses.MISSING:
        default = f.default
    elif f.default_factory is not dataclasses.MISSING:
        default = f.default_factory()
    else:
        return f.metadata.get("help", "")
    shown = ",".join(map(str, default)) if isinstance(default, tuple) else default
    shown = "none" if shown is None else shown
    return f"{f.metadata.get('help', '')} (default: {shown})".lstrip().replace("%", "%%")


def _parser_of(annotation: Any, parse: Callable[[str], Any] | None = None) -> Callable[[str], Any]:
    args = typing.get_args(annotation)
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        if len(args) != 2 or type(None) not in args:
            raise TypeError(f"add_fields: unsupported annotation {annotation!r}")
        inner = _parser_of(next(a for a in args if a is not type(None)), parse)
        return _named(lambda text: None if text.strip().lower() == "none" else inner(text),
                      f"{inner.__name__} or none")
    if typing.get_origin(annotation) is tuple:
        items = [_SCALARS[a] for a in args if a is not Ellipsis]

        def parse_tuple(text: str) -> tuple:
            parts = [p for p in text.split(",") if p.strip()]
            if Ellipsis in args:
                return tuple(items[0](p) for p in parts)
            if len(parts) != len(items):
                raise argparse.ArgumentTypeError(f"need {len(items)} comma-separated values, got {text!r}")
            return tuple(parse(p) for parse, p in zip(items, parts))
        return _named(parse_tuple, "comma-separated list")
    if parse is not None:
        return _named(_argument_error(parse), getattr(parse, "__name__", "value"))
    if annotation not in _SCALARS:
        raise TypeError(f"add_fields: unsupported annotation {annotation!r}")
    return _SCALARS[annotation]


def _argument_error(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """``parse``, its ValueError turned into argparse's one-line error."""
    def wrapped(text: str) -> Any:
        try:
            return parse(text)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
    return wrapped


def _named(parse: Callable[[str], Any], name: str) -> Callable[[str], Any]:
    parse.__name__ = name  # argparse names the type in its "invalid ... value" message
    return parse
