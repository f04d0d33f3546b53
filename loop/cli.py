"""The `align` console script: align's commands (align.cli) and the whole-loop ones, `round` and `demo`.

The table is assembled here, above align, so that align never imports loop.
"""

from align.cli import COMMANDS as ALIGN_COMMANDS
from prefloop.cli import dispatch

COMMANDS = {
    **ALIGN_COMMANDS,
    "round": ("loop.round:main", "one turn of the loop from YAML: generate, judge, reward model, align, evaluate",
              "loop.round_config:RoundConfig"),
    "demo": ("loop.demo:main", "the whole loop headless on the embedded model with simulated annotators; "
             "prints the round table", "loop.demo:DemoConfig"),
}


def main(argv=None) -> int:
    return dispatch("align", COMMANDS, argv)


if __name__ == "__main__":  # `python -m loop.cli round ...` (the same as `align round ...`)
    import sys

    sys.exit(main())
