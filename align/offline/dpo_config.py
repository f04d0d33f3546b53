"""Configuration of `align dpo` on exported pairs (online DPO: align.onpolicy.online_dpo_config)."""

from __future__ import annotations

from dataclasses import dataclass, field

from align.losses import LOSSES, check_objective
from align.train_common import TrainConfig


@dataclass
class DPOConfig(TrainConfig):
    """Direct Preference Optimization (Rafailov et al. 2023) on exported preference pairs."""

    output_dir: str = field(default="runs/dpo", metadata={"help": "the run: final/ (the model), checkpoints/, "
                                                                   "metrics.jsonl, tensorboard/, run.json"})
    # objective
    loss_type: str = field(default="sigmoid", metadata={"help": "preference loss (align/losses.py): sigmoid = DPO, "
                                                                "ipo, hinge = SLiC, robust = rDPO, conservative = cDPO",
                                                        "choices": list(LOSSES)})
    beta: float = field(default=0.1, metadata={"help": "KL strength β of max E[r] − β·KL(π_θ‖π_ref) "
                                                       "(τ for IPO)", "range": "> 0"})
    label_smoothing: float = field(default=0.0, metadata={"help": "label-flip rate ε for the robust and "
                                                                  "conservative losses, in [0, 0.5)",
                                                                  "range": "[0, 0.5)"})
    margin_scale: float = field(default=1.0, metadata={"help": "ODPO offset Δ = margin_scale·margin from judged "
                                                               "strength (losses that support it); 0 = plain DPO",
                                                               "range": ">= 0"})
    precompute_ref_log_probs: bool = field(default=False, metadata={
        "help": "full fine-tuning: compute log π_ref once before training so no reference model stays in memory "
                "(no KL diagnostic then); LoRA always uses the base with the adapter disabled"})

    def __post_init__(self):
        super().__post_init__()
        check_objective(self.loss_type, self.label_smoothing)
