"""Command-line flags derived from frozen config dataclasses: each setting is declared once, in its dataclass.

A field whose default is itself a frozen dataclass instance (``TrainConfig.generator:
GeneratorConfig = GeneratorConfig(...)``) is flattened: each of the nested dataclass's fields gets
its own flag (``--widths``, ``--temperature``), defaulting to the value in that default instance,
and :func:`config_from_args` rebuilds the nested instance from them. Flag names must be unique
over the whole tree; a collision is an error when the flags are defined.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import re
from typing import Any, Iterator


def _is_nested(default: Any) -> bool:
    """A dataclass *instance* as a field default: its fields become flags of their own."""
    return dataclasses.is_dataclass(default) and not isinstance(default, type)


def _doc_help(cls) -> dict[str, str]:
    """Field descriptions from the ``Args:`` / ``Attributes:`` section of ``cls``'s docstring
    (Google style: ``name: text`` with indented continuation lines; ``a, b: text`` describes both),
    the help of flags whose field has no ``metadata["help"]``."""
    doc = inspect.getdoc(cls) or ""
    out: dict[str, str] = {}
    section = False
    current: list[str] = []
    text: list[str] = []
    indent = None

    def flush() -> None:
        if current:
            joined = " ".join(" ".join(text).split())
            for name in current:
                out.setdefault(name, joined)

    for line in doc.splitlines():
        stripped = line.strip()
        if stripped in ("Args:", "Attributes:", "Arguments:"):
            flush()
            current, text, section, indent = [], [], True, None
            continue
        if not section:
            continue
        if not stripped:
            continue
        lead = len(line) - len(line.lstrip())
        if lead == 0:  # the section ended (a new heading or paragraph)
            flush()
            current, text, section = [], [], False
            continue
        m = re.match(r"^([A-Za-z_][\w]*(?:\s*,\s*[A-Za-z_][\w]*)*)\s*(?:\([^)]*\))?:\s*(.*)$", stripped)
        if m and (indent is None or lead <= indent):
            flush()
            indent = lead
            current = [n.strip() for n in m.group(1).split(",")]
            text = [m.group(2)]
        elif current:
            text.append(stripped)
    flush()
    return out


@dataclasses.dataclass(frozen=True)
class _Leaf:
    """One flag: its field's name, default, help and annotation."""

    name: str
    default: Any
    help: str | None
    annotation: str
    group: str  # "" for the top level, else the nested field's path and class ("generator (GeneratorConfig)")


def _leaves(cls, defaults=None, owner: str = "") -> Iterator[_Leaf]:
    """The flag-carrying fields of ``cls``, nested dataclass defaults flattened (depth first)."""
    docs = _doc_help(cls)
    group = f"{owner} ({cls.__name__})" if owner else ""
    for f in dataclasses.fields(cls):
        default = getattr(defaults, f.name) if defaults is not None else f.default
        if _is_nested(default):
            yield from _leaves(type(default), default, f"{owner}.{f.name}" if owner else f.name)
            continue
        help_ = f.metadata.get("help") or docs.get(f.name)
        yield _Leaf(f.name, default, help_, str(f.type), group)


def _check_unique(cls) -> None:
    """Raise ValueError when two fields of the flattened tree of ``cls`` would share a flag (or a
    nested field shares its name with a field of its owner)."""
    seen: dict[str, str] = {}

    def walk(c, defaults, owner: str) -> None:
        for f in dataclasses.fields(c):
            default = getattr(defaults, f.name) if defaults is not None else f.default
            where = f"{owner}{f.name}"
            if f.name in seen:
                raise ValueError(f"config field {where} and {seen[f.name]} would both be the flag --{f.name.replace('_', '-')}; "
                                 "rename one (flags of a nested config are its field names, flattened)")
            seen[f.name] = where
            if _is_nested(default):
                walk(type(default), default, where + ".")

    walk(cls, None, f"{cls.__name__}.")


def config_flags(p: argparse.ArgumentParser, cls) -> None:
    """One kebab-case flag per field of the frozen dataclass ``cls`` (``photo_limit`` ->
    ``--photo-limit``): booleans as ``--x/--no-x``, tuples as N values (an empty default or a
    ``tuple[T, ...]`` annotation: any number), fields without a default required. A field whose
    default is a dataclass instance gives one flag per field of its own instead (see the module
    docstring). A field's ``metadata["help"]`` is its help text, else its entry in the class
    docstring's ``Args:`` / ``Attributes:`` section.

    Raises:
        ValueError: two fields of the flattened tree have the same name.
    """
    _check_unique(cls)
    groups: dict[str, Any] = {"": p}
    for leaf in _leaves(cls):
        if leaf.group not in groups:  # a nested config's flags under its own heading in --help
            groups[leaf.group] = p.add_argument_group(leaf.group)
        add = groups[leaf.group].add_argument
        flag = "--" + leaf.name.replace("_", "-")
        default = leaf.default
        kw = {"help": leaf.help.replace("%", "%%")} if leaf.help else {}
        if default is dataclasses.MISSING:
            add(flag, type=str, required=True, **kw)
        elif isinstance(default, bool):
            add(flag, action=argparse.BooleanOptionalAction, default=default, **kw)
        elif isinstance(default, tuple):
            kind = type(default[0]) if default else str
            variable = not default or "..." in leaf.annotation
            add(flag, type=kind, nargs=("*" if not default else "+") if variable else len(default), default=default,
                metavar="N" if default and kind in (int, float) else "VALUE", **kw)
        else:
            add(flag, type=type(default), default=default, **kw)


def _build(cls, values: dict[str, Any], defaults=None):
    kw = {}
    for f in dataclasses.fields(cls):
        default = getattr(defaults, f.name) if defaults is not None else f.default
        if _is_nested(default):
            kw[f.name] = _build(type(default), values, default)
        elif f.name in values:
            v = values[f.name]
            kw[f.name] = tuple(v) if isinstance(v, list) else v
    return cls(**kw)


def config_from_args(cls, ns: argparse.Namespace):
    """The ``cls`` instance of parsed :func:`config_flags` (lists back to tuples, nested configs
    rebuilt from their flattened flags; other attributes of ``ns`` ignored)."""
    return _build(cls, vars(ns))


def parse_config(cls, argv: list[str] | None, prog: str, doc: str | None):
    """(parser, ``cls`` instance) from kebab-case flags (:func:`config_flags`); the parser's
    description is the first paragraph of ``doc`` (a module's docstring). The parser stays at hand
    for ``p.error`` on errors found later; a value the dataclass refuses (its ``__post_init__``
    raising ValueError) is reported through it as well."""
    p = argparse.ArgumentParser(prog=prog, description=(doc or "").split("\n\n")[0])
    config_flags(p, cls)
    ns = p.parse_args(argv)
    try:
        return p, config_from_args(cls, ns)
    except ValueError as e:
        p.error(str(e))
