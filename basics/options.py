"""Typed options: dataclass fields <-> command-line flags and YAML keys.

An option is a dataclass field with ``metadata={"help": ...}``. Every option is a ``--kebab-case``
flag and a ``snake_case`` YAML key, generated from the dataclass so the two never drift apart.
Defaults < YAML < flags.

A config class composed of sections (``TrainConfig``: model, data, optim, ...) lists its options
with a classmethod ``options()`` and is built with ``from_flat(values)``; a plain dataclass is its
own single section. ``metadata["key"]`` gives an option a flat name other than its field name, and
``metadata["role"]`` says what changing it does to a run (:data:`ROLES`).
"""

from __future__ import annotations

import argparse
import dataclasses
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from basics.errors import UserError

# What changing an option does to a finished run, for deciding whether it is still "the same run":
# result - changes what the run computes (epochs, lr, seed, ...);
# scoring - changes only the importance scores and the masks cut after training (compared only when
#           the run scores importance);
# input - names an input file (a mask): compared by the file's content, not its path;
# outputs - asks for extra files after training (checked by whoever needs them);
# free - changes nothing the run produces (where it runs, threads, progress bars, checkpoints).
ROLES = ("result", "scoring", "input", "outputs", "free")


@dataclass(frozen=True)
class Option:
    """One option: its flat name (flag and YAML key), section (None: the class itself), field, type."""

    key: str
    section: str | None
    field: str
    annotation: Any
    help: str
    role: str
    default: Any


def _field_options(cls: type, section: str | None) -> list[Option]:
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        if f.metadata.get("internal"):
            continue
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else None)  # type: ignore[misc]
        role = f.metadata.get("role", "result")
        if role not in ROLES:
            raise ValueError(f"{cls.__name__}.{f.name}: unknown role {role!r}")
        out.append(Option(f.metadata.get("key", f.name), section, f.name, hints[f.name], f.metadata.get("help", ""),
                          role, default))
    return out


def options_of(cls: type) -> list[Option]:
    """Every option of ``cls``: ``cls.options()`` for a sectioned config, else its dataclass fields."""
    if hasattr(cls, "options"):
        return cls.options()
    return _field_options(cls, None)


def section_options(section_cls: type, section: str) -> list[Option]:
    """The options of one section class (for a sectioned config's ``options()``)."""
    return _field_options(section_cls, section)


def _base_type(annotation: Any) -> tuple[type, bool, bool]:
    """(element type, optional?, is list?) of a field annotation such as ``int | None`` or ``list[str]``."""
    args = typing.get_args(annotation)
    optional = type(None) in args
    if optional:
        annotation = next(a for a in args if a is not type(None))
    if typing.get_origin(annotation) is list:
        return typing.get_args(annotation)[0], optional, True
    return annotation, optional, False


def _parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(text)


def _converter(elem: type, optional: bool, is_list: bool):
    def convert(text: str):
        if optional and text.strip().lower() in ("none", "null", ""):
            return None
        if is_list:
            return [elem(part.strip()) for part in text.split(",") if part.strip()]
        return _parse_bool(text) if elem is bool else elem(text)

    convert.__name__ = getattr(elem, "__name__", "value")
    return convert


def add_config_flags(parser: argparse.ArgumentParser, cls: type) -> None:
    """Add one ``--kebab-case`` flag per option of ``cls``; unset flags stay absent (``SUPPRESS``)."""
    for opt in options_of(cls):
        elem, optional, is_list = _base_type(opt.annotation)
        flag = "--" + opt.key.replace("_", "-")
        if elem is bool and not optional and not is_list:
            parser.add_argument(flag, dest=opt.key, action=argparse.BooleanOptionalAction,
                                default=argparse.SUPPRESS, help=opt.help)
        else:
            parser.add_argument(flag, dest=opt.key, type=_converter(elem, optional, is_list),
                                default=argparse.SUPPRESS, help=opt.help, metavar=opt.key.upper())


def coerce_value(cls: type, name: str, value: Any) -> Any:
    """Convert a YAML value to the option's type (``"rte,mrpc"`` -> list, ``"3e-5"`` -> float)."""
    opt = {o.key: o for o in options_of(cls)}.get(name)
    if opt is None:
        raise UserError(f"unknown config key {name!r}; valid keys: {', '.join(sorted(o.key for o in options_of(cls)))}")
    elem, optional, is_list = _base_type(opt.annotation)
    if value is None:
        if optional:
            return None
        raise UserError(f"config key {name!r} cannot be null")
    try:
        if is_list:
            items = value.split(",") if isinstance(value, str) else list(value)
            return [elem(str(v).strip()) for v in items if str(v).strip()]
        if elem is bool:
            return value if isinstance(value, bool) else _parse_bool(str(value))
        if elem is float and isinstance(value, (int, float, str)):
            return float(value)
        if elem is int and isinstance(value, bool):
            raise ValueError(value)
        return elem(value)
    except (TypeError, ValueError):
        raise UserError(f"config key {name!r}: cannot read {value!r} as {getattr(elem, '__name__', elem)}") from None


def read_yaml(path: Path) -> dict[str, Any]:
    """Read a YAML mapping; a missing file or non-mapping is a :class:`UserError`."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise UserError(f"config file {path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise UserError(f"config file {path} must hold a mapping of option: value")
    return data


def build_config(cls: type, yaml_values: dict[str, Any], flag_values: dict[str, Any]):
    """Defaults < YAML < flags. Unknown YAML keys are an error listing the valid ones."""
    names = {o.key for o in options_of(cls)}
    values: dict[str, Any] = {}
    for key, value in yaml_values.items():
        name = str(key).replace("-", "_")
        if name not in names:
            raise UserError(f"unknown config key {key!r}; valid keys: {', '.join(sorted(names))}")
        values[name] = coerce_value(cls, name, value)
    values.update(flag_values)
    return cls.from_flat(values) if hasattr(cls, "from_flat") else cls(**values)


def check_choice(name: str, value: str, options: tuple[str, ...] | list[str]) -> None:
    """UserError ``--name must be one of a, b; got 'x'`` unless ``value`` is in ``options``."""
    if value not in options:
        raise UserError(f"--{name.replace('_', '-')} must be one of {', '.join(options)}; got {value!r}")


def check_positive(name: str, value: float, allow_zero: bool = False) -> None:
    """UserError unless ``value`` > 0 (>= 0 with ``allow_zero``); NaN is refused too."""
    if value != value or value < 0 or (value == 0 and not allow_zero):  # value != value: NaN
        bound = ">= 0" if allow_zero else "> 0"
        raise UserError(f"--{name.replace('_', '-')} must be {bound}, got {value}")
