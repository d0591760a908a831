"""Entry-point plumbing: one-line errors (exit 2), config from ``--config`` YAML + flags."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from basics.errors import UserError
from basics.options import add_config_flags, build_config, options_of, read_yaml


class OneLineParser(argparse.ArgumentParser):
    """argparse that reports a bad flag as one line (``error: ...``) and exit status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UserError(f"{message} (see {self.prog} --help)")


def config_parser(prog: str, description: str, config_cls: type) -> OneLineParser:
    parser = OneLineParser(prog=prog, description=description,
                           formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--config", type=Path, default=None, help="YAML file of options; flags override it")
    add_config_flags(parser, config_cls)
    return parser


def parse_config(parser: argparse.ArgumentParser, config_cls: type, argv: Sequence[str] | None):
    """Parse flags; defaults < ``--config`` YAML < flags. Returns ``(config, namespace)``."""
    args = parser.parse_args(argv)
    values = dict(vars(args))
    config_path = values.pop("config", None)
    yaml_values = read_yaml(config_path) if config_path is not None else {}
    known = {o.key for o in options_of(config_cls)}
    flags = {k: v for k, v in values.items() if k in known}
    return build_config(config_cls, yaml_values, flags), args


def run_main(fn: Callable[[], int | None]) -> int:
    """Run ``fn``; a :class:`UserError` becomes one line on stderr and exit status 2."""
    try:
        return fn() or 0
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
