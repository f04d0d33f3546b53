"""Config loading: one dataclass per command, filled from YAML, then overridden by flags.

    cfg = parse_config(PPOConfig, ["--config", "configs/ppo.yaml", "--beta", "0.05"])

Each dataclass field becomes a flag `--field-name` (underscores or dashes both work),
with the help taken from `field(metadata={"help": ...})`. Validation stays in the
dataclass's own `__post_init__`, which runs once the file and the flags are merged.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


def config_field(default, help_text: str, **metadata):
    """A dataclass field with its one-line help (and argparse choices); a list default is copied per instance."""
    if isinstance(default, list):
        return dataclasses.field(default_factory=lambda: list(default), metadata={"help": help_text, **metadata})
    return dataclasses.field(default=default, metadata={"help": help_text, **metadata})


class ConfigError(ValueError):
    """One line naming the file or flag that is wrong."""


def parse_config(cls: type[T], argv: list[str] | None = None, prog: str | None = None) -> T:
    parser = build_parser(cls, prog)
    args = parser.parse_args(argv)
    values: dict[str, Any] = {}
    if args.config:
        values.update(load_yaml(args.config, cls))
    values.update({k: v for k, v in vars(args).items() if k != "config" and v is not None})
    try:
        return cls(**values)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{cls.__name__}: {err}") from err


def build_parser(cls, prog: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=(cls.__doc__ or "").strip().split("\n")[0],
                                     argument_default=None)
    parser.add_argument("--config", help="YAML file with the same fields; flags override it")
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        kind, is_list = _base_type(hints[f.name])
        flags = [f"--{f.name.replace('_', '-')}"] + ([f"--{f.name}"] if "_" in f.name else [])
        help_text = f.metadata.get("help", "")
        default = _default_of(f)
        help_text = f"{help_text} (default: {default})" if default is not dataclasses.MISSING else help_text
        if kind is bool:
            parser.add_argument(*flags, dest=f.name, type=_parse_bool, nargs="?", const=True, help=help_text)
            parser.add_argument(f"--no-{f.name.replace('_', '-')}", dest=f.name, action="store_const", const=False,
                                help=argparse.SUPPRESS)
        elif is_list:
            parser.add_argument(*flags, dest=f.name, type=kind, nargs="+", help=help_text)
        else:
            choices = f.metadata.get("choices")
            parser.add_argument(*flags, dest=f.name, type=kind, choices=choices, help=help_text)
    return parser


def load_yaml(path: str | Path, cls=None) -> dict[str, Any]:
    import yaml

    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: config file not found")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({str(err).splitlines()[0]})") from err
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of field: value at the top level")
    data = {k.replace("-", "_"): v for k, v in data.items()}
    if cls is not None:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"{path}: unknown field(s) {', '.join(unknown)} for {cls.__name__}")
    return data


def to_dict(cfg) -> dict[str, Any]:
    """A JSON-friendly dict of a config, for metadata files."""
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(cfg).items()}


def _default_of(f: dataclasses.Field):
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return f.default_factory()  # type: ignore[misc]
    return dataclasses.MISSING


def _base_type(hint) -> tuple[type, bool]:
    """(element type, is_list) for hints like int, str | None, list[str], Optional[float]."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return _base_type(args[0])
    if origin in (list, tuple):
        return typing.get_args(hint)[0], True
    if origin is typing.Literal:
        return type(typing.get_args(hint)[0]), False
    if hint is Path:
        return str, False
    return hint, False


def _parse_bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {text!r}")
