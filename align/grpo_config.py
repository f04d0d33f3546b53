"""Configuration of `align grpo` and `align rloo`: one dataclass each, every field with the paper's symbol.

The fields an on-policy trainer shares with `align ppo` (model, data, rollout, optimisation,
LoRA) carry PPOConfig's names; the group-relative ones carry the papers' and TRL's
(`num_generations` = G, `num_iterations` = mu, `loss_type`, `scale_rewards`).
When the shared on-policy core lands (branch `trainers`), the shared fields move to its base
config and these classes keep only their own.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from align.grpo_core import AGGREGATIONS
from prefloop.models import DEFAULT_MODEL


def _f(default, help_text: str, **metadata):
    return field(default=default, metadata={"help": help_text, **metadata})


@dataclass
class GRPOConfig:
    """GRPO with graders (Shao et al. 2024), Dr. GRPO without std normalisation (Liu et al. 2025)."""

    # --- models and data -----------------------------------------------------------------
    model: str = _f(DEFAULT_MODEL, "policy pi_theta to fine-tune; its initial weights are pi_ref")
    data: str | None = _f(None, "RFT dataset: .jsonl/.csv/.parquet, datasets directory or hf:NAME[:SPLIT] with "
                                "prompt, reference and optional grader columns (align/rft_data.py)")
    store: str | None = _f(None, "preference-store URL to read imported RFT prompts from (with --project)")
    project: str | None = _f(None, "project in --store")
    graders: str | None = _f(None, "grader spec for rows without one: a grader name or a YAML file "
                                   "{graders: [{name, weight, ...}]} (align/graders/mix.py)")
    prompt_field: str | None = _f(None, "read the prompt from this column (e.g. 'question')")
    reference_field: str | None = _f(None, "read the reference from this column (e.g. 'answer')")
    max_prompts: int | None = _f(None, "use at most this many examples (None: all)")
    max_prompt_length: int = _f(256, "prompt tokens kept (the beginning of longer prompts is cut)")
    output_dir: str = _f("runs/grpo", "directory for checkpoints, metrics and the final policy")
    seed: int = _f(0, "random seed")

    # --- rollout -----------------------------------------------------------------------------
    steps: int = _f(100, "iterations: each samples num_generations answers to prompts_per_step prompts")
    prompts_per_step: int = _f(4, "prompts q per iteration")
    num_generations: int = _f(8, "group size G: answers sampled per prompt [GRPO §4.1]")
    max_new_tokens: int = _f(64, "answer length limit in tokens")
    temperature: float = _f(1.0, "sampling temperature T; log-probs use the same T")

    # --- objective [GRPO Eq. 3] ----------------------------------------------------------------
    beta: float = _f(0.0, "KL coefficient beta on the k3 estimate of KL to pi_ref in the loss (0: no reference "
                          "model is kept)")
    cliprange: float = _f(0.2, "clip range epsilon in clip(ratio, 1 - eps, 1 + eps) [PPO Eq. 7]")
    scale_rewards: bool = _f(True, "divide group-centred rewards by the group's std (GRPO); false is Dr. GRPO")
    loss_type: str = _f("sequence", "how token losses are averaged: sequence (GRPO: per answer, then mean), token "
                                    "(DAPO), dr_grpo (sum / constant), sum (REINFORCE)",
                        choices=list(AGGREGATIONS))
    length_penalty: float = _f(0.0, "subtracted from the graders' reward per answer token, as a share of "
                                    "max_new_tokens: r - lambda * |y| / max_new_tokens (against verbose hacking)")

    # --- optimisation ---------------------------------------------------------------------------
    num_iterations: int = _f(1, "policy updates mu on each batch [GRPO Alg. 1]; 1 is on-policy and the clip "
                                "never binds")
    mini_batch_size: int = _f(8, "answers per optimizer step; divides prompts_per_step * num_generations")
    learning_rate: float = _f(1e-6, "Adam learning rate")
    adam_eps: float = _f(1e-5, "Adam epsilon")
    max_grad_norm: float = _f(1.0, "clip the global gradient norm to this")

    algorithm = "grpo"  # not a field: which advantage and loss of align.grpo_core

    def __post_init__(self):
        if self.data is None and not (self.store and self.project):
            raise ValueError("give --data, or --store and --project")
        for name in ("steps", "prompts_per_step", "num_generations", "max_new_tokens", "num_iterations",
                     "mini_batch_size", "max_prompt_length"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.num_generations < 2:
            raise ValueError("num_generations must be >= 2: a group of one has no relative advantage")
        batch = self.prompts_per_step * self.num_generations
        if batch % self.mini_batch_size:
            raise ValueError(f"mini_batch_size {self.mini_batch_size} must divide prompts_per_step * "
                             f"num_generations = {batch}")
        if self.beta < 0 or self.cliprange <= 0 or self.temperature <= 0 or self.length_penalty < 0:
            raise ValueError("beta and length_penalty must be >= 0; cliprange and temperature > 0")
        if self.loss_type not in AGGREGATIONS:
            raise ValueError(f"loss_type {self.loss_type!r} is not one of {', '.join(AGGREGATIONS)}")


@dataclass
class RLOOConfig(GRPOConfig):
    """RLOO (Ahmadian et al. 2024): REINFORCE with a leave-one-out baseline, the KL to pi_ref in the reward."""

    output_dir: str = _f("runs/rloo", "directory for checkpoints, metrics and the final policy")
    num_generations: int = _f(4, "k answers per prompt; each is baselined by the mean of the other k - 1")
    beta: float = _f(0.05, "KL coefficient beta in R = r - beta * log(pi / pi_ref) [RLOO §3.2]")
    loss_type: str = _f("sum", "REINFORCE sums the log-probs of an answer's tokens (sum); other averages as "
                               "for GRPO", choices=list(AGGREGATIONS))

    algorithm = "rloo"
