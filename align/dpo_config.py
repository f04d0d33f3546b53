"""Configuration of `align dpo` (offline on exported pairs, or `--online` against a reward model)."""

from __future__ import annotations

from dataclasses import dataclass, field

from align.losses import LOSSES
from align.train_common import TrainConfig


@dataclass
class DPOConfig(TrainConfig):
    """Direct Preference Optimization (Rafailov et al. 2023), offline or online."""

    output_dir: str = field(default="runs/dpo", metadata={"help": "checkpoints, metrics.jsonl, runs/ (TensorBoard) "
                                                                   "and final/ (the model)"})
    # objective
    loss_type: str = field(default="sigmoid", metadata={"help": "preference loss (align/losses.py): sigmoid = DPO, "
                                                                "ipo, hinge = SLiC, robust = rDPO, conservative = cDPO",
                                                        "choices": list(LOSSES)})
    beta: float = field(default=0.1, metadata={"help": "KL strength β of max E[r] − β·KL(π_θ‖π_ref) "
                                                       "(τ for IPO)"})
    label_smoothing: float = field(default=0.0, metadata={"help": "label-flip rate ε for the robust and "
                                                                  "conservative losses, in [0, 0.5)"})
    margin_scale: float = field(default=1.0, metadata={"help": "ODPO offset Δ = margin_scale·margin from judged "
                                                               "strength (losses that support it); 0 = plain DPO"})
    precompute_ref_log_probs: bool = field(default=False, metadata={
        "help": "full fine-tuning: compute log π_ref once before training so no reference model stays in memory "
                "(no KL diagnostic then); LoRA always uses the base with the adapter disabled"})
    # online DPO (Guo et al. 2024, "Direct Language Model Alignment from Online AI Feedback")
    online: bool = field(default=False, metadata={"help": "sample pairs from the current policy and label them "
                                                          "with the reward model each iteration"})
    reward_model: str | None = field(default=None, metadata={"help": "online: reward r(x, y): a reward model dir "
                                                                     "or 'module:function'"})
    prompts: str | None = field(default=None, metadata={"help": "online: prompts file; default: the prompts of "
                                                                "--data / --store"})
    iterations: int = field(default=20, metadata={"help": "online: sample-score-update rounds"})
    prompts_per_iteration: int = field(default=8, metadata={"help": "online: prompts x sampled per round"})
    num_generations: int = field(default=4, metadata={"help": "online: responses N ≥ 2 sampled per prompt; best "
                                                              "and worst by r become y_w and y_l"})
    max_new_tokens: int = field(default=64, metadata={"help": "online: response length cap"})
    temperature: float = field(default=1.0, metadata={"help": "online: sampling temperature"})
    min_reward_gap: float = field(default=0.1, metadata={"help": "online: skip a prompt when r(y_w) − r(y_l) is "
                                                                 "below this (near-tie, no reliable preference)"})
    updates_per_iteration: int = field(default=1, metadata={"help": "online: passes over each round's fresh pairs"})
    eval_prompts: int = field(default=8, metadata={"help": "online: held-out prompts scored at start and end"})

    def __post_init__(self):
        super().__post_init__()
        if self.beta <= 0:
            raise ValueError(f"beta must be > 0, got {self.beta}")
        if not 0.0 <= self.label_smoothing < 0.5:
            raise ValueError(f"label_smoothing must be in [0, 0.5), got {self.label_smoothing}")
        if self.label_smoothing and not LOSSES[self.loss_type].uses_label_smoothing:
            raise ValueError(f"label_smoothing is only used by the robust and conservative losses, "
                             f"not {self.loss_type!r}")
        if self.margin_scale < 0:
            raise ValueError(f"margin_scale must be >= 0, got {self.margin_scale}")
        if self.online:
            self._check_online()

    def _check_online(self):
        if not self.reward_model:
            raise ValueError("online DPO needs reward_model (a reward model dir or 'module:function')")
        if self.num_generations < 2:
            raise ValueError(f"num_generations must be >= 2 to form a pair, got {self.num_generations}")
        for name in ("iterations", "prompts_per_iteration", "max_new_tokens", "updates_per_iteration"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
