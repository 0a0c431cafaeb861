"""Settings written once: a dataclass field carries its default, help, flag and allowed range.

Each config section is a ``kw_only`` dataclass whose fields are made with
:func:`setting`; its ``__post_init__`` calls :func:`check_settings`, which
enforces the declared ranges and choices and names the flag in the error.  The
command-line parser is generated from the same fields (:func:`add_arguments`),
so a default, a help text or a bound exists in exactly one place.
"""
from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from typing import Any, Callable, Iterator, Optional, Sequence

from ..errors import GnnZeroError

_MISSING = dataclasses.MISSING


class SettingError(GnnZeroError):
    """A configuration value outside its allowed range; the message names the flag."""


def setting(default: Any = _MISSING, help: str = "", *, flag: Optional[str] = None,
            choices: Optional[Sequence[Any]] = None, low: Optional[float] = None,
            high: Optional[float] = None, low_open: bool = False, high_open: bool = False,
            none_means: Optional[str] = None, const: Any = _MISSING, cli: bool = True,
            metavar: Optional[str] = None,
            aliases: Sequence[str] = (), allowed: Optional[str] = None) -> Any:
    """A dataclass field with its command-line metadata.

    ``low``/``high`` bound numbers (inclusive unless ``*_open``); ``choices`` lists the
    allowed values; ``none_means`` documents what ``None`` stands for (and allows it);
    ``const`` makes the flag's value optional (``--resume`` alone = ``const``);
    ``cli=False`` keeps a field off the command line (it is derived or internal);
    ``allowed`` describes free-form values (a path, a name) for ``--help`` and the README.
    """
    meta = {"help": help, "flag": flag, "choices": tuple(choices) if choices else None,
            "low": low, "high": high, "low_open": low_open, "high_open": high_open,
            "none_means": none_means, "const": const, "cli": cli,
            "metavar": metavar, "aliases": tuple(aliases), "allowed": allowed}
    if isinstance(default, list):
        frozen = list(default)
        return dataclasses.field(default_factory=lambda: list(frozen), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def flag_of(f: dataclasses.Field) -> str:
    return f.metadata.get("flag") or "--" + f.name.replace("_", "-")


def _allowed(f: dataclasses.Field) -> str:
    m = f.metadata
    parts = []
    if m.get("choices"):
        parts.append("one of " + ", ".join(str(c) for c in m["choices"]))
    if m.get("low") is not None:
        parts.append(f"{'>' if m['low_open'] else '>='} {m['low']:g}")
    if m.get("high") is not None:
        parts.append(f"{'<' if m['high_open'] else '<='} {m['high']:g}")
    text = " and ".join(parts) if parts else (m.get("allowed") or "any text")
    if m.get("none_means"):
        text += f", or none ({m['none_means']})"
    return text


def _kind(f: dataclasses.Field, hints: dict[str, Any]) -> tuple[type, bool, bool]:
    """(scalar type, optional?, list?) of a field's annotation."""
    hint = hints[f.name]
    optional = False
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        optional, hint = True, args[0]
        origin = typing.get_origin(hint)
    if origin in (list, tuple):
        return typing.get_args(hint)[0], optional, True
    return hint, optional, False


def _type_ok(value: Any, kind: type) -> bool:
    if kind is bool:
        return isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is str:
        return isinstance(value, str)
    return True


def _in_range(value: Any, m: dict) -> bool:
    if m.get("choices") and value not in m["choices"]:
        return False
    low, high = m.get("low"), m.get("high")
    if low is not None and (value <= low if m["low_open"] else value < low):
        return False
    if high is not None and (value >= high if m["high_open"] else value > high):
        return False
    return True


def refuse(f: dataclasses.Field, value: Any, why: Optional[str] = None) -> SettingError:
    """The one-line error for ``value`` of field ``f``: the flag, the value, what is allowed."""
    shown = "none" if value is None else (",".join(map(str, value)) if isinstance(value, list)
                                          else value)
    return SettingError(f"{flag_of(f)} {shown}: {why or 'must be ' + _allowed(f)}")


def check_settings(section: Any) -> None:
    """Enforce every field's declared type, range and choices (call from ``__post_init__``)."""
    hints = typing.get_type_hints(type(section))
    for f in dataclasses.fields(section):
        value = getattr(section, f.name)
        kind, optional, is_list = _kind(f, hints)
        if value is None:
            if optional:
                continue
            raise refuse(f, value)
        items = value if is_list else [value]
        if is_list and (not isinstance(value, list) or not value):
            raise refuse(f, value, "must be a non-empty comma-separated list")
        for item in items:
            if not _type_ok(item, kind):
                raise refuse(f, value, f"must be of type {kind.__name__}, got "
                                       f"{type(item).__name__}")
            if kind is not bool and not _in_range(item, f.metadata):
                raise refuse(f, value)


def field_named(section_type: type, name: str) -> dataclasses.Field:
    return next(f for f in dataclasses.fields(section_type) if f.name == name)


# ----------------------------------------------------------------- command line

def _parser_for(kind: type, optional: bool, is_list: bool) -> Callable[[str], Any]:
    def scalar(text: str) -> Any:
        if optional and text.lower() in ("none", ""):
            return None
        return kind(text)

    def items(text: str) -> list:
        return [kind(v) for v in text.split(",") if v.strip()]

    parse = items if is_list else scalar
    parse.__name__ = f"comma-separated {kind.__name__}" if is_list else kind.__name__
    return parse


def cli_fields(section_type: type) -> Iterator[dataclasses.Field]:
    return (f for f in dataclasses.fields(section_type) if f.metadata.get("cli", False))


def add_arguments(group: argparse._ActionsContainer, section_type: type, dest_prefix: str) -> None:
    """One argument per command-line field of ``section_type``, defaults from the dataclass."""
    hints = typing.get_type_hints(section_type)
    for f in cli_fields(section_type):
        m = f.metadata
        kind, optional, is_list = _kind(f, hints)
        default = f.default if f.default is not _MISSING else f.default_factory()
        shown = ",".join(map(str, default)) if is_list and default else default
        allowed = "" if kind is bool else f"; {_allowed(f)}"
        help_text = (f"{m['help']} (default: {'none' if default is None else shown}{allowed})"
                     .replace("%", "%%"))
        dest = f"{dest_prefix}{f.name}"
        names = [flag_of(f), *m["aliases"]]
        if kind is bool and not optional:
            group.add_argument(*names, dest=dest, action="store_true", help=help_text,
                               default=argparse.SUPPRESS)
            continue
        kwargs: dict[str, Any] = {"dest": dest, "help": help_text, "default": argparse.SUPPRESS,
                                  "type": _parser_for(kind, optional, is_list),
                                  "metavar": m.get("metavar")}
        if m.get("const") is not _MISSING:
            kwargs.update(nargs="?", const=m["const"])
        group.add_argument(*names, **kwargs)


def section_from_args(section_type: type, namespace: argparse.Namespace, dest_prefix: str,
                      **extra: Any) -> Any:
    """Build ``section_type`` from the flags given (fields not given keep their defaults)."""
    given = {f.name: getattr(namespace, f"{dest_prefix}{f.name}")
             for f in cli_fields(section_type) if hasattr(namespace, f"{dest_prefix}{f.name}")}
    return section_type(**given, **extra)


def catalogue_rows(section_type: type, section: str) -> list[dict[str, str]]:
    """One row per command-line field: flag, default, allowed values, help (for the README)."""
    hints = typing.get_type_hints(section_type)
    rows = []
    for f in cli_fields(section_type):
        kind, _, is_list = _kind(f, hints)
        default = f.default if f.default is not _MISSING else f.default_factory()
        shown = ",".join(map(str, default)) if is_list and default else default
        allowed = "flag" if kind is bool else _allowed(f)
        if f.metadata.get("const") is not _MISSING:
            allowed += f" (`{flag_of(f)}` alone = {f.metadata['const']})"
        rows.append({"section": section, "flag": flag_of(f),
                     "default": "none" if default is None else str(shown),
                     "allowed": allowed, "meaning": f.metadata["help"]})
    return rows
