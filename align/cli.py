"""`align` console script."""

from prefloop.cli import dispatch

COMMANDS = {
    # filled in by the align issues: "sft", "ppo", "dpo", "grpo", "rloo", "eval"
}


def main(argv=None) -> int:
    return dispatch("align", COMMANDS, argv)
