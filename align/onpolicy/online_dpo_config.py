"""Configuration of online DPO (`align online-dpo`): Guo et al. 2024,
"Direct Language Model Alignment from Online AI Feedback"; best-vs-worst of N samples as in Xiong et al. 2024."""

from __future__ import annotations

from dataclasses import dataclass

from align.losses import LOSSES, check_objective
from align.onpolicy.config import OnPolicyConfig
from prefloop.config import config_field as _f


@dataclass
class OnlineDPOConfig(OnPolicyConfig):
    """Online DPO: sample N responses per prompt from pi_theta, label best vs worst with r(x, y), DPO update."""

    output_dir: str = _f("runs/dpo_online", "the run: final/ (the policy), checkpoints/, metrics.jsonl, "
                                            "tensorboard/, run.json")
    max_steps: int = _f(20, "sample-score-update steps", range=">= 1")
    temperature: float = _f(1.0, "sampling temperature T of the N responses", range="> 0")
    learning_rate: float = _f(5e-6, "AdamW learning rate eta", range="> 0")
    num_generations: int = _f(4, "responses N >= 2 sampled per prompt; best and worst by r become y_w and y_l", range=">= 2")
    min_reward_gap: float = _f(0.1, "skip a prompt when r(y_w) - r(y_l) is below this (near-tie, no reliable "
                                    "preference)", range=">= 0")
    num_iterations: int = _f(1, "passes over each step's fresh pairs", range=">= 1", aliases=("updates_per_step",))
    weight_decay: float = _f(0.01, "AdamW weight decay (torch's default)")
    # the objective: the same loss functions as offline DPO (align/losses.py)
    loss_type: str = _f("sigmoid", "preference loss (align/losses.py): sigmoid = DPO, ipo, hinge = SLiC, "
                                   "robust = rDPO, conservative = cDPO", choices=list(LOSSES))
    beta: float = _f(0.1, "KL strength beta of max E[r] - beta KL(pi_theta || pi_ref) (tau for IPO)", range="> 0")
    label_smoothing: float = _f(0.0, "label-flip rate epsilon for the robust and conservative losses, in [0, 0.5)", range="[0, 0.5)")

    def __post_init__(self):
        super().__post_init__()
        check_objective(self.loss_type, self.label_smoothing)
