"""One typed settings object per process, loaded from file, then environment, then CLI.

Each area declares its own dataclass (e.g. ``edge.settings.EdgeSettings``); this module
only knows how to fill any nested dataclass:

* a TOML file whose tables mirror the nesting (``[vision] detector_period = 5``);
* environment variables ``<PREFIX>_<SECTION>__<FIELD>`` (e.g. ``DANCEWIRE_EDGE_VISION__DETECTOR_PERIOD=5``);
* CLI overrides ``section.field=value``.
Unknown keys are errors, so a typo never silently does nothing.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import tomllib
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

from dancewire.errors import DancewireError

T = TypeVar("T")


def _coerce(value: Any, typ: Any) -> Any:
    origin = typing.get_origin(typ)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(typ) if a is not type(None)]
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null", "")):
            return None
        return _coerce(value, args[0])
    if dataclasses.is_dataclass(typ):
        raise ValueError("this is a section: set its fields (a [table] in TOML, section.field=value)")
    if not isinstance(value, str):
        # TOML gives typed values: check them against the field's type (numbers become text where
        # text is wanted: `camera = 0`), so a wrong one fails here and not deep in the pipeline
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if typ is bool and isinstance(value, bool):
            return value
        if typ is int and number and float(value).is_integer():
            return int(value)
        if typ is float and number:
            return float(value)
        if typ in (str, Path) and number:
            return typ(str(value))
        if origin in (tuple, list) and isinstance(value, (list, tuple)):
            inner = typing.get_args(typ)[0] if typing.get_args(typ) else str
            return origin(_coerce(v, inner) for v in value)
        if typ in (bool, int, float, str, Path) or origin in (tuple, list):
            want = {bool: "true or false", int: "an integer", float: "a number", str: "text", Path: "a path"}
            raise ValueError(f"expected {want.get(typ, 'a list')}, got {value!r}")
        return value
    if typ is bool:
        if value.lower() in ("1", "true", "yes", "on"):
            return True
        if value.lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"not a boolean: {value!r}")
    if typ in (int, float, str):
        return typ(value)
    if typ is Path:
        return Path(value)
    if origin in (tuple, list):
        inner = typing.get_args(typ)[0] if typing.get_args(typ) else str
        return origin(_coerce(v.strip(), inner) for v in value.split(",") if v.strip())
    return value


def port_arg(text: str) -> int:
    """argparse type of a TCP port (0 where a command takes it as "off")."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port {port} not in 0..65535")
    return port


def require(cond: bool, section: str, msg: str) -> None:
    """For the settings' `validate()`: a value out of range or not among the choices is one clear error."""
    if not cond:
        raise DancewireError(f"{section} settings: {msg}")


def _apply(obj: Any, path: list[str], value: Any, where: str, full: str = "") -> Any:
    hints = typing.get_type_hints(type(obj))
    name = path[0]
    full = full or ".".join(path)
    if name not in hints:
        raise DancewireError(f"unknown setting {full!r} in {where}")
    current = getattr(obj, name)
    if len(path) > 1:
        if not dataclasses.is_dataclass(current):
            raise DancewireError(f"setting {full!r}: {name!r} has no sub-settings ({where})")
        return dataclasses.replace(obj, **{name: _apply(current, path[1:], value, where, full)})
    try:
        return dataclasses.replace(obj, **{name: _coerce(value, hints[name])})
    except (ValueError, TypeError) as exc:
        raise DancewireError(f"bad value for setting {full!r} ({where}): {exc}") from None


def _flatten(table: dict, prefix: tuple[str, ...] = ()) -> list[tuple[list[str], Any]]:
    out: list[tuple[list[str], Any]] = []
    for key, value in table.items():
        if isinstance(value, dict):
            out.extend(_flatten(value, prefix + (key,)))
        else:
            out.append((list(prefix + (key,)), value))
    return out


def load(cls: type[T], file: str | Path | None = None, env_prefix: str | None = None,
         overrides: list[str] | None = None) -> T:
    """Build ``cls()`` and apply the file, the environment and the CLI overrides in that order."""
    obj: Any = cls()
    if file is not None:
        try:
            table = tomllib.loads(Path(file).read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise DancewireError(f"cannot read settings file {file}: {exc}") from None
        for path, value in _flatten(table):
            obj = _apply(obj, path, value, str(file))
    if env_prefix:
        head = env_prefix.upper() + "_"
        for key, value in sorted(os.environ.items()):
            if key.startswith(head):
                path = [p.lower() for p in key[len(head):].split("__")]
                obj = _apply(obj, path, value, f"${key}")
    for item in overrides or []:
        if "=" not in item:
            raise DancewireError(f"override {item!r} must look like section.field=value")
        key, value = item.split("=", 1)
        obj = _apply(obj, key.strip().split("."), value.strip(), "--set")
    return obj
