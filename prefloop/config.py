"""Config loading: one dataclass per command, filled from YAML, then overridden by flags.

    cfg = parse_config(PPOConfig, ["--config", "ppo", "--beta", "0.05"])

Each dataclass field becomes a flag `--field-name` (underscores or dashes both work),
with the help taken from `field(metadata={"help": ...})`. Validation stays in the
dataclass's own `__post_init__`, which runs once the file and the flags are merged;
before it, every value is checked against the field's type and floats must be finite
(a nan compares false with every bound, so it would pass any range check).

A number's range is declared on its field, `config_field(8, "batch size", range=">= 1")` (or
`"> 0"`, `"[0, 1]"`, `"[0, 0.5)"`), shown in `--help`, and checked by `check_ranges(self)`,
which each config's `__post_init__` calls: one mechanism, not an `if` per field per command.

`--config` takes a YAML path or the name of a config shipped in `prefloop/configs/`
(`--config dpo`), so the presets work from any directory.

A renamed field keeps its old name for one release: `config_field(None, "...", aliases=("db",))` makes
`--db` (and the YAML key `db:`, and the key in `align round`'s sections) mean `store`, with a one-line
notice on stderr; `--help` lists the old flag as a deprecated alias. One mechanism for every command.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import math
import operator
import sys
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

from prefloop.errors import ConfigError  # noqa: F401 - re-exported, raised here

T = TypeVar("T")


def config_field(default, help_text: str, **metadata):
    """A dataclass field with its one-line help (and argparse choices); a list default is copied per instance."""
    if isinstance(default, list):
        return dataclasses.field(default_factory=lambda: list(default), metadata={"help": help_text, **metadata})
    return dataclasses.field(default=default, metadata={"help": help_text, **metadata})


def parse_config(cls: type[T], argv: list[str] | None = None, prog: str | None = None) -> T:
    parser = build_parser(cls, prog)
    args = parser.parse_args(argv)
    values: dict[str, Any] = {}
    if args.config:
        path = resolve_config(args.config)
        values.update(rebase_paths(cls, load_yaml(path, cls), path))
    values.update({k: v for k, v in vars(args).items() if k != "config" and v is not None})
    _check_values(cls, values)
    try:
        return cls(**values)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{cls.__name__}: {err}") from err


SHIPPED_CONFIGS = Path(__file__).parent / "configs"


def shipped_configs() -> list[str]:
    return sorted(path.stem for path in SHIPPED_CONFIGS.glob("*.yaml"))


def resolve_config(name: str | Path) -> Path:
    """A YAML path as given, else the shipped config of that name: `dpo`, `dpo.yaml` or `configs/dpo.yaml`.

    `configs/NAME.yaml` (relative, or in a checkout) is where the presets lived before they moved
    into the package; it still means the shipped preset wherever no such file exists.
    """
    path = Path(name)
    if path.is_file():
        return path
    shipped = SHIPPED_CONFIGS / f"{path.stem}.yaml"
    old_home = path.parent == Path(".") or path.parent.name == "configs"
    if shipped.exists() and old_home and path.suffix in ("", ".yaml"):
        return shipped  # also when a directory of that name is here (`reward_model/` in a checkout)
    if path.exists():
        return path  # not a file: load_yaml says so in one line
    raise ConfigError(f"{name}: no such config file, and no shipped config of that name "
                      f"(shipped: {', '.join(shipped_configs())})")


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (argparse prints the whole usage block first)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser(cls, prog: str | None = None) -> argparse.ArgumentParser:
    # allow_abbrev off: `--reward` must not silently mean `--reward-model` (or break when a field is added)
    parser = _Parser(prog=prog, description=(cls.__doc__ or "").strip().split("\n")[0], argument_default=None,
                     allow_abbrev=False)
    parser.add_argument("--config", help="YAML file with the same fields, or the name of a shipped config "
                                         f"({', '.join(shipped_configs())}); flags override it")
    hints = typing.get_type_hints(cls)
    for f in help_order(cls):
        if not f.init:
            continue
        kind, is_list = _base_type(hints[f.name])
        flags = [f"--{f.name.replace('_', '-')}"] + ([f"--{f.name}"] if "_" in f.name else [])
        flags += [f.metadata["short"]] if "short" in f.metadata else []  # `-n`: kept, not deprecated
        help_text = f.metadata.get("help", "").replace("%", "%%")  # argparse %-formats help
        default = _default_of(f)
        notes = ([f"default: {default}"] if default is not dataclasses.MISSING else []) + (
            [describe_range(f.metadata["range"])] if "range" in f.metadata else [])
        help_text = f"{help_text} ({'; '.join(notes)})" if notes else help_text
        if kind is bool:
            parser.add_argument(*flags, dest=f.name, type=_parse_bool, nargs="?", const=True, help=help_text)
            parser.add_argument(f"--no-{f.name.replace('_', '-')}", dest=f.name, action="store_const", const=False,
                                help=argparse.SUPPRESS)
        elif is_list:
            parser.add_argument(*flags, dest=f.name, type=kind, nargs="+", help=help_text)
        else:
            choices = f.metadata.get("choices")
            parser.add_argument(*flags, dest=f.name, type=kind, choices=choices, help=help_text)
        _add_aliases(parser, f, kind, is_list)
    return parser


# --- old names: a renamed field answers to its old flag and YAML key for one release ---------------

class _OldFlag(argparse.Action):
    """An old flag name: sets the renamed field, after a one-line notice on stderr."""

    def __call__(self, parser, namespace, values, option_string=None):
        new = f"--{self.dest.replace('_', '-')}"
        print(f"{parser.prog}: warning: {option_string} is deprecated, use {new} (the old name goes in the next "
              "release)", file=sys.stderr)
        setattr(namespace, self.dest, values)


def _add_aliases(parser: argparse.ArgumentParser, f: dataclasses.Field, kind: type, is_list: bool) -> None:
    for old in f.metadata.get("aliases", ()):
        flags = [f"--{old.replace('_', '-')}"] + ([f"--{old}"] if "_" in old else [])
        new = f"--{f.name.replace('_', '-')}"
        extra = ({"type": _parse_bool, "nargs": "?", "const": True} if kind is bool else
                 {"type": kind, "nargs": "+" if is_list else None, "choices": f.metadata.get("choices")})
        parser.add_argument(*flags, dest=f.name, action=_OldFlag, metavar=f.name.upper(),
                            help=f"deprecated alias of {new} (kept for one release)", **extra)


def field_aliases(cls) -> dict[str, str]:
    """Old name -> field name, for every field of `cls` that declares `aliases` in its metadata."""
    return {old: f.name for f in dataclasses.fields(cls) for old in f.metadata.get("aliases", ())}


def rename_aliases(cls, values: dict[str, Any], where: str) -> dict[str, Any]:
    """`values` (a YAML mapping, or a section of one) with each old field name replaced by the new one, one
    notice on stderr per old name used; the old and the new name together are a ConfigError (which wins?)."""
    renamed = field_aliases(cls)
    out: dict[str, Any] = {}
    for key, value in values.items():
        name = renamed.get(key, key)
        if name != key:
            if name in values:
                raise ConfigError(f"{where}: {key} and {name} are one field (old and new name): give {name} only")
            print(f"prefloop: warning: {where}: {key} is deprecated, use {name} (the old name goes in the next "
                  "release)", file=sys.stderr)
        out[name] = value
    return out


def help_order(cls) -> list[dataclasses.Field]:
    """The fields as `--help` and the reference list them: the command's own first, then the shared groups
    (prefloop.fields, marked FIELD_GROUP), which a dataclass would list first as they are its bases."""
    shared = {f.name for base in cls.__mro__ if vars(base).get("FIELD_GROUP") for f in dataclasses.fields(base)}
    return sorted(dataclasses.fields(cls), key=lambda f: f.name in shared)


def rebase_paths(cls, values: dict[str, Any], yaml_path: Path) -> dict[str, Any]:
    """Input files a YAML names (fields with metadata `path=True`) are relative to the YAML file, not to
    the directory the command runs in; a shipped preset's are relative to the installed package root
    where that file exists (`labeling/loop_prompts.jsonl`), else left as written (a file of the user's)."""
    shipped = yaml_path.resolve().parent == SHIPPED_CONFIGS.resolve()
    base = SHIPPED_CONFIGS.parent.parent if shipped else yaml_path.parent
    out = dict(values)
    for f in dataclasses.fields(cls):
        value = values.get(f.name)
        if not (f.metadata.get("path") and isinstance(value, str) and value) or value.startswith("~") \
                or ":" in value or Path(value).is_absolute():
            continue  # an absolute path, ~, a hub id (hf:NAME) or URL: as written
        if not shipped or (base / value).exists():
            out[f.name] = str(base / value)
    return out


def load_yaml(path: str | Path, cls=None) -> dict[str, Any]:
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found" if not path.exists() else f"{path}: not a file")
    try:
        data = yaml.safe_load(path.read_text("utf-8")) or {}
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not a UTF-8 text file (byte {err.start})") from err
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({str(err).splitlines()[0]})") from err
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of field: value at the top level")
    data = {k.replace("-", "_"): v for k, v in data.items()}
    if cls is not None:
        data = rename_aliases(cls, data, str(path))
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"{path}: unknown field(s) {', '.join(unknown)} for {cls.__name__}")
    return data


def _check_values(cls, values: dict[str, Any]) -> None:
    """Each value has its field's type (YAML gives any type) and every float is finite."""
    hints = typing.get_type_hints(cls)
    for name, value in values.items():
        if value is None or name not in hints:
            continue
        kind, is_list = _base_type(hints[name])
        for item in (value if is_list and isinstance(value, (list, tuple)) else [value]):
            if kind is float and isinstance(item, (int, float)) and not isinstance(item, bool):
                if not math.isfinite(item):
                    raise ConfigError(f"{name}: expected a finite number, got {item}")
            elif kind in (int, float, str, bool) and not (isinstance(item, kind) and
                                                          not (kind is int and isinstance(item, bool))):
                raise ConfigError(f"{name}: expected {'a list of ' if is_list else ''}{kind.__name__}, got {item!r}")
        if is_list and not isinstance(value, (list, tuple)):
            raise ConfigError(f"{name}: expected a list, got {value!r}")


# --- ranges: declared on the field, checked by one function -------------------------------------

SEED_RANGE = "[0, 4294967295]"  # range "seed": what numpy's and torch's generators take
_OPS = {">=": operator.ge, ">": operator.gt, "<=": operator.le, "<": operator.lt}


@functools.cache
def parse_range(spec: str) -> tuple[tuple[str, float], ...]:
    """A field's range as (operator, bound) pairs: ">= 1", "> 0", "[0, 1]", "(0, 1)", "[0, 0.5)".

    A malformed spec is a bug in our code (TypeError), found by the test that parses every config's ranges.
    """
    text = SEED_RANGE if spec == "seed" else spec.replace(" ", "")
    for op in (">=", ">", "<=", "<"):
        if text.startswith(op):
            return ((op, float(text[len(op):])),)
    if len(text) > 4 and text[0] in "[(" and text[-1] in "])" and text.count(",") == 1:
        lo, hi = text[1:-1].split(",")
        return ((">=" if text[0] == "[" else ">", float(lo)), ("<=" if text[-1] == "]" else "<", float(hi)))
    raise TypeError(f"range {spec!r}: expected '>= N', '> N', '<= N', '< N' or an interval like '[0, 1)'")


def describe_range(spec: str) -> str:
    spec = SEED_RANGE if spec == "seed" else spec
    return f"in {spec}" if spec.lstrip()[0] in "[(" else spec


def check_ranges(cfg) -> None:
    """Every field of the dataclass `cfg` whose metadata declares a `range` holds a value in it (each item
    of a list; None, an unset optional, passes): ValueError naming the field, the range and the value.
    Called by each command config's __post_init__, so a config built in code (`align round` builds the
    trainers' configs from its YAML sections) is checked as the command line's is."""
    for f in dataclasses.fields(cfg):
        spec = f.metadata.get("range")
        if spec is None:
            continue
        value = getattr(cfg, f.name)
        for item in value if isinstance(value, (list, tuple)) else [value]:
            if item is None:
                continue
            if not (isinstance(item, (int, float)) and not isinstance(item, bool)) or not all(
                    _OPS[op](item, bound) for op, bound in parse_range(spec)) or item != item:  # nan: never
                raise ValueError(f"{f.name} must be {describe_range(spec)}, got {item!r}")


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
