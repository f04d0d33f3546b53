"""`align`'s own commands: the trainers, the GeneralPoints task writer and evaluation.

The `align` console script is `loop.cli`, which offers these and adds the whole-loop commands (round,
demo) that stand above align; this table never imports loop, so the arrow points one way.
"""

from prefloop.cli import dispatch

COMMANDS = {
    "sft": ("align.offline.sft_trainer:main", "supervised fine-tuning on the sft export (TRL SFTTrainer)",
            "align.offline.sft_config:SFTConfig"),
    "ppo": ("align.onpolicy.ppo_trainer:main", "PPO with a KL penalty against a reward model (Ziegler et al. 2019)",
            "align.onpolicy.ppo_config:PPOConfig"),
    "dpo": ("align.offline.dpo_trainer:main", "DPO on exported pairs (Rafailov et al. 2023)",
            "align.offline.dpo_config:DPOConfig"),
    "online-dpo": ("align.onpolicy.online_dpo_trainer:main", "online DPO: best-vs-worst of N samples labelled by a "
                   "reward model (Guo et al. 2024)", "align.onpolicy.online_dpo_config:OnlineDPOConfig"),
    "grpo": ("align.onpolicy.grpo_trainer:main", "GRPO with graders: group-relative advantages (Shao et al. 2024)",
             "align.onpolicy.grpo_config:GRPOConfig"),
    "rloo": ("align.onpolicy.grpo_trainer:main_rloo", "RLOO with graders: leave-one-out baseline, KL in the reward "
             "(Ahmadian et al. 2024)", "align.onpolicy.grpo_config:RLOOConfig"),
    "generalpoints": ("align.graders.generalpoints:main", "write GeneralPoints card-arithmetic RFT tasks "
                      "(Chu et al. 2025)", "align.graders.generalpoints:GeneralPointsConfig"),
    "eval": ("align.evaluation.evaluate:main", "policies against a reference: win rates, reward, KL, best-of-N, "
             "reward-vs-KL plot", "align.evaluation.eval_config:EvalConfig"),
}


def main(argv=None) -> int:
    return dispatch("align", COMMANDS, argv)


if __name__ == "__main__":  # `accelerate launch ... -m align.cli ppo ...` (every trainer)
    import sys

    sys.exit(main())
