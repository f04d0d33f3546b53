"""`align` console script."""

from prefloop.cli import dispatch

COMMANDS = {
    "sft": ("align.sft_trainer:main", "supervised fine-tuning on the sft export (TRL SFTTrainer)",
            "align.sft_config:SFTConfig"),
    "ppo": ("align.ppo_trainer:main", "PPO with a KL penalty against a reward model (Ziegler et al. 2019)",
            "align.ppo_config:PPOConfig"),
    "dpo": ("align.dpo_trainer:main", "DPO on exported pairs (Rafailov et al. 2023)",
            "align.dpo_config:DPOConfig"),
    "online-dpo": ("align.dpo_online:main", "online DPO: best-vs-worst of N samples labelled by a reward model "
                   "(Guo et al. 2024)", "align.online_dpo_config:OnlineDPOConfig"),
    "grpo": ("align.grpo_trainer:main", "GRPO with graders: group-relative advantages (Shao et al. 2024)",
             "align.grpo_config:GRPOConfig"),
    "rloo": ("align.grpo_trainer:main_rloo", "RLOO with graders: leave-one-out baseline, KL in the reward "
             "(Ahmadian et al. 2024)", "align.grpo_config:RLOOConfig"),
    "generalpoints": ("align.generalpoints:main", "write GeneralPoints card-arithmetic RFT tasks (Chu et al. 2025)",
                      "align.generalpoints:GeneralPointsConfig"),
    "eval": ("align.evaluate:main", "policies against a reference: win rates, reward, KL, best-of-N, reward-vs-KL plot",
             "align.eval_config:EvalConfig"),
    "round": ("align.round:main", "one turn of the loop from YAML: generate, judge, reward model, align, evaluate",
              "align.round_config:RoundConfig"),
    "demo": ("align.demo:main", "the whole loop headless on the embedded model with simulated annotators; "
             "prints the round table", "align.demo:DemoConfig"),
}


def main(argv=None) -> int:
    return dispatch("align", COMMANDS, argv)


if __name__ == "__main__":  # `accelerate launch ... -m align.cli ppo ...` (every command)
    import sys

    sys.exit(main())
