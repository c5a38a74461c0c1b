"""A JSON report read back into the typed model (``reprobuild explain REPORT.json``).

The inverse of :mod:`.json`: every field is checked against the model's type hints, so a
file that is not a reprobuild report, or one of another schema, is refused with the field
that is wrong instead of failing later. Fields added after a report was written take
their defaults.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from enum import Enum
from pathlib import Path
from typing import Any, TypeVar, get_args, get_origin, get_type_hints

from reprobuild.errors import InputError
from reprobuild.report.model import SCHEMA, Report

__all__ = ["load", "parse"]

T = TypeVar("T")
_MAX_BYTES = 256 * 1024 * 1024


class _Wrong(Exception):
    """A value that does not fit its field (the message names the field)."""


def _value(hint: Any, data: Any, where: str) -> Any:
    origin = get_origin(hint)
    if hint is Any:
        return data
    if origin in (typing.Union, types.UnionType):
        options = get_args(hint)
        if data is None and type(None) in options:
            return None
        for option in options:
            if option is type(None):
                continue
            try:
                return _value(option, data, where)
            except _Wrong:
                continue
        raise _Wrong(f"{where}: {type(data).__name__} fits none of {hint}")
    if origin is tuple:
        if not isinstance(data, list):
            raise _Wrong(f"{where}: expected a list")
        inner = get_args(hint)[0]
        return tuple(_value(inner, item, f"{where}[{i}]") for i, item in enumerate(data))
    if origin is dict:
        if not isinstance(data, dict):
            raise _Wrong(f"{where}: expected an object")
        key_type, value_type = get_args(hint)
        return {_value(key_type, k, where): _value(value_type, v, f"{where}.{k}")
                for k, v in data.items()}
    if isinstance(hint, type) and issubclass(hint, Enum):
        try:
            return hint(data)
        except ValueError as exc:
            raise _Wrong(f"{where}: {data!r} is not a {hint.__name__}") from exc
    if dataclasses.is_dataclass(hint) and isinstance(hint, type):
        return _record(hint, data, where)
    if hint is float and isinstance(data, int | float) and not isinstance(data, bool):
        return float(data)
    if isinstance(hint, type) and isinstance(data, hint) and not (
            hint is int and isinstance(data, bool)):
        return data
    raise _Wrong(f"{where}: expected {getattr(hint, '__name__', hint)}, got "
                 f"{type(data).__name__}")


def _record(cls: type[T], data: Any, where: str) -> T:
    if not isinstance(data, dict):
        raise _Wrong(f"{where}: expected an object")
    hints = get_type_hints(cls)
    values: dict[str, Any] = {}
    for item in dataclasses.fields(cls):  # type: ignore[arg-type]
        name = item.name
        if name in data:
            values[name] = _value(hints[name], data[name], f"{where}.{name}".lstrip("."))
        elif item.default is dataclasses.MISSING and \
                item.default_factory is dataclasses.MISSING:
            raise _Wrong(f"{where}.{name}: missing".lstrip("."))
    return cls(**values)


def parse(data: Any) -> Report:
    """A decoded JSON report as a :class:`Report` (InputError naming the wrong field)."""
    if not isinstance(data, dict) or "schema" not in data:
        raise InputError("this JSON is not a reprobuild report (it has no 'schema')",
                         "pass the report.json of a run (--json FILE, or --out DIR)")
    if data["schema"] != SCHEMA:
        raise InputError(f"report schema {str(data['schema'])[:80]!r} is not {SCHEMA}",
                         "read it with the reprobuild version that wrote it")
    if not data.get("builds") and data.get("verdict") == "error":
        raise InputError("this report is of a run that ended in an error before any build",
                         "nothing to explain: rerun the check")
    fields = {k: v for k, v in data.items() if k != "exit_code"}
    try:
        return _record(Report, fields, "")
    except _Wrong as exc:
        raise InputError(f"the report does not fit the {SCHEMA} schema: {exc}",
                         "pass a report.json written by reprobuild") from None


def load(path: Path) -> Report:
    """Read a report file (or ``DIR/report.json`` of an ``--out`` directory)."""
    target = path / "report.json" if path.is_dir() else path
    try:
        if target.stat().st_size > _MAX_BYTES:
            raise InputError(f"{target} is larger than {_MAX_BYTES >> 20} MiB",
                             "pass the report.json of a run")
        text = target.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"no report at {target}",
                         "pass a report.json, or the --out directory of a run") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read {target}: {exc}", "pass a report.json") from None
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise InputError(f"{target} is not JSON ({exc})", "pass a report.json") from None
    return parse(data)
