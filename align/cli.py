"""`align` console script."""

from prefloop.cli import dispatch

COMMANDS = {
    "sft": ("align.sft_trainer:main", "supervised fine-tuning on the sft export (TRL SFTTrainer)",
            "align.sft_config:SFTConfig"),
    "ppo": ("align.ppo_trainer:main", "PPO with a KL penalty against a reward model (Ziegler et al. 2019)",
            "align.ppo_config:PPOConfig"),
    "dpo": ("align.dpo_trainer:main", "DPO on exported pairs, or --online with a reward model (Rafailov et al. 2023)",
            "align.dpo_config:DPOConfig"),
    "eval": ("align.evaluate:main", "policies against a reference: win rates, reward, KL, best-of-N, reward-vs-KL plot",
             "align.eval_config:EvalConfig"),
    "round": ("align.round:main", "one turn of the loop from YAML: generate, judge, reward model, align, evaluate",
              "align.round_config:RoundConfig"),
}


def main(argv=None) -> int:
    return dispatch("align", COMMANDS, argv)


if __name__ == "__main__":  # `accelerate launch -m align.cli ppo ...`
    import sys

    sys.exit(main())
