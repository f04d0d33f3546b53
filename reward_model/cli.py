"""`reward-model` console script."""

from prefloop.cli import dispatch

COMMANDS = {
    # filled in by the reward-model issue: "train", "eval", "score"
}


def main(argv=None) -> int:
    return dispatch("reward-model", COMMANDS, argv)
