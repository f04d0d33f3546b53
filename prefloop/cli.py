"""A tiny subcommand dispatcher: `tool SUBCOMMAND [flags]`, each subcommand a lazily imported main(argv).

Keeping imports lazy makes `tool --help` instant even though subcommands pull in torch.
"""

from __future__ import annotations

import importlib
import sys


def dispatch(prog: str, commands: dict[str, tuple[str, str]], argv: list[str] | None = None) -> int:
    """`commands` maps name -> ("module:function", one-line help[, "module:ConfigClass"]).

    With the config class named, `COMMAND --help` is answered from it without
    importing the command's module (trainers import torch and TRL: seconds).
    """
    from prefloop.hardware import passive_openmp_waits

    passive_openmp_waits()  # before any command imports torch: OpenMP reads it once, as it loads
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(f"usage: {prog} COMMAND [--config FILE.yaml] [flags]\n\ncommands:")
        for name, entry in commands.items():
            print(f"  {name:<12} {entry[1]}")
        print(f"\n`{prog} COMMAND --help` lists a command's flags.")
        return 0  # asking what the tool does is not an error, with or without --help
    name, rest = argv[0], argv[1:]
    if name not in commands:
        print(f"{prog}: unknown command {name!r}; choose from {', '.join(commands)}", file=sys.stderr)
        return 2
    entry = commands[name]
    if len(entry) > 2 and any(arg in ("-h", "--help") for arg in rest):
        from prefloop.config import build_parser

        build_parser(load_entry(entry[2]), prog=f"{prog} {name}").print_help()
        return 0
    module, func = entry[0].split(":")
    return run_main(getattr(importlib.import_module(module), func), rest, prog)


def load_entry(path: str):
    """The object a "module:name" string names (a command's main, its config class), imported now."""
    module, attr = path.split(":")
    return getattr(importlib.import_module(module), attr)


def run_main(func, argv: list[str], prog: str) -> int:
    """Run a subcommand; expected errors (bad input) print one line instead of a traceback."""
    from prefloop.errors import UserError

    try:
        return func(argv) or 0
    except UserError as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
