"""`reward-model` console script."""

from prefloop.cli import dispatch

COMMANDS = {
    "train": ("reward_model.reward_trainer:main", "train a Bradley-Terry reward model on comparisons",
              "reward_model.reward_config:RewardModelConfig"),
    "eval": ("reward_model.evaluate:main", "held-out accuracy, calibration and plots of a reward model"),
    "score": ("reward_model.batch_score:main", "score a JSONL file of prompt/response rows"),
    "serve": ("reward_model.serve:main", "serve a reward model over HTTP (OpenRLHF's remote protocol, a JSON API)",
              "reward_model.serve:RMServeConfig"),
    "prioritize": ("reward_model.active:main", "active learning: serve the comparisons the model is least sure of first",
                   "reward_model.active:PrioritizeConfig"),
}


def main(argv=None) -> int:
    return dispatch("reward-model", COMMANDS, argv)


if __name__ == "__main__":  # `accelerate launch ... -m reward_model.cli train ...`
    import sys

    sys.exit(main())
