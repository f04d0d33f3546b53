"""`align` console script."""

from prefloop.cli import dispatch

COMMANDS = {
    # filled in by the align issues: "sft", "ppo", "dpo", "grpo", "rloo", "eval"
    "ppo": ("align.ppo_trainer:main", "PPO with a KL penalty against a reward model (Ziegler et al. 2019)"),
    "sft": ("align.sft_trainer:main", "supervised fine-tuning on the sft export (TRL SFTTrainer)"),
    "dpo": ("align.dpo_trainer:main", "DPO on exported pairs, or --online with a reward model (Rafailov et al. 2023)"),
}


def main(argv=None) -> int:
    return dispatch("align", COMMANDS, argv)
