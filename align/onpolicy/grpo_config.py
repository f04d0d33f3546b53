"""Configuration of `align grpo` and `align rloo`: one dataclass each, on the on-policy core's shared fields.

The shared fields (model, prompts/store, max_steps, batch_size = prompts per step, max_new_tokens,
temperature, learning_rate, LoRA, save_steps, resume) are OnPolicyConfig's, named as TRL names them.
`prompts` is the RFT dataset: rows with a prompt, a `reference` and optionally a `grader` spec
(align/onpolicy/rft_data.py). The reward is the graders' mix; `reward_model`, optional here, joins the mix
as one component with weight `reward_model_weight`. The group-relative fields carry the papers'
and TRL's names (`num_generations` = G, `num_iterations` = mu, `loss_type`, `scale_rewards`).
"""

from __future__ import annotations

from dataclasses import dataclass

from align.onpolicy.config import OnPolicyConfig
from prefloop.config import config_field as _f

# align.onpolicy.grpo_core.AGGREGATIONS' keys, written out so that `--help` imports no torch (a test keeps them equal)
LOSS_TYPES = ("sequence", "token", "dr_grpo", "sum")


@dataclass
class GRPOConfig(OnPolicyConfig):
    """GRPO with graders (Shao et al. 2024); Dr. GRPO without the std normalisation (Liu et al. 2025)."""

    output_dir: str = _f("runs/grpo", "the run: final/ (the policy), checkpoints/, metrics.jsonl, tensorboard/, "
                                      "run.json, plots")
    prompts: str | None = _f(None, "RFT dataset: .jsonl/.csv/.parquet, datasets directory or hf:NAME[:SPLIT] with "
                                   "prompt, reference and optional grader columns (align/onpolicy/rft_data.py)")
    eval_prompts: str | None = _f(None, "held-out RFT dataset: mean reward and share of full marks at the start "
                                        "and the end (none: no held-out evaluation)")
    graders: str | None = _f(None, "grader spec for rows without their own: a grader name, or a YAML file "
                                   "{graders: [{name, weight, ...}]} (align/graders/mix.py)")
    reward_model: str = _f("", "optional: a reward model (or 'module:function') added to every row's graders "
                               "as sigmoid(r), weight reward_model_weight")
    reward_model_weight: float = _f(0.5, "weight of reward_model in the mix (the graders' weights are relative)", range=">= 0")
    prompt_field: str | None = _f(None, "read the prompt from this column (e.g. 'question')")
    reference_field: str | None = _f(None, "read the reference from this column (e.g. 'answer')")
    max_steps: int = _f(100, "iterations: each samples num_generations answers to batch_size prompts", range=">= 1")
    batch_size: int = _f(4, "prompts q per step", range=">= 1")
    num_generations: int = _f(8, "group size G: answers sampled per prompt [GRPO §4.1]", range=">= 2")
    temperature: float = _f(1.0, "sampling temperature T; log-probs use the same T", range="> 0")
    learning_rate: float = _f(1e-6, "AdamW learning rate", range="> 0")
    beta: float = _f(0.0, "KL coefficient beta on the k3 estimate of KL(pi || pi_ref) in the loss [GRPO Eq. 4]; "
                          "0 computes no reference log-probs", range=">= 0")
    cliprange: float = _f(0.2, "clip range epsilon in clip(ratio, 1 - eps, 1 + eps) [PPO Eq. 7]", range="> 0")
    scale_rewards: bool = _f(True, "divide group-centred rewards by the group's std (GRPO); false is Dr. GRPO")
    loss_type: str = _f("sequence", "how token losses are averaged: sequence (GRPO: per answer, then mean), "
                                    "token (DAPO), dr_grpo (sum / constant), sum (REINFORCE)",
                        choices=list(LOSS_TYPES))
    length_penalty: float = _f(0.0, "lambda in r - lambda * |y| / max_new_tokens (against verbose reward hacking)", range=">= 0")
    num_iterations: int = _f(1, "policy updates mu on each batch [GRPO Alg. 1]; 1 is on-policy: the clip never "
                                "binds", range=">= 1")
    mini_batch_size: int = _f(8, "answers per optimizer step; divides batch_size * num_generations", range=">= 1")
    sample_every: int = _f(10, "print and save a table of samples with their graders' reasons every N steps "
                               "(0: never)", range=">= 0")
    num_samples: int = _f(8, "rows in the sample table", range=">= 1")
    # the graders' budget and what rows may open: the operator's alone (align/graders/budget.py, align/onpolicy/rft_data.py)
    grade_time_limit: float = _f(5.0, "wall-clock seconds per answer's grade; over it the answer scores 0 "
                                      "('timed out') and the run goes on (rows' time_limit is capped by it)",
                                 range="> 0")
    grade_memory_mb: int = _f(1024, "address-space limit (MiB) of the process that runs python and sql graders; "
                                    "over it the answer scores 0 ('over memory')", range=">= 64")
    sql_dir: str | None = _f(None, "folder that rows' SQL databases (grader option db, a relative path) lie in; "
                                   "none: rows may not name a database")

    algorithm = "grpo"  # not a field: which advantage and loss of align.onpolicy.grpo_core

    def grade_budget(self):
        from align.graders.budget import Budget

        return Budget(self.grade_time_limit, self.grade_memory_mb)

    REWARD_MODEL_REQUIRED = False  # the graders are the reward; a reward model only joins their mix

    def __post_init__(self):
        super().__post_init__()
        if (self.batch_size * self.num_generations) % self.mini_batch_size:
            raise ValueError(f"mini_batch_size {self.mini_batch_size} must divide batch_size * num_generations "
                             f"= {self.batch_size * self.num_generations}")
        if self.mini_batch_size % self.sampling_shards:
            raise ValueError(f"sampling_shards {self.sampling_shards} must divide mini_batch_size {self.mini_batch_size}")
        if self.loss_type not in LOSS_TYPES:
            raise ValueError(f"loss_type {self.loss_type!r} is not one of {', '.join(LOSS_TYPES)}")


@dataclass
class RLOOConfig(GRPOConfig):
    """RLOO (Ahmadian et al. 2024): REINFORCE with a leave-one-out baseline, the KL to pi_ref in the reward."""

    output_dir: str = _f("runs/rloo", "the run: final/ (the policy), checkpoints/, metrics.jsonl, tensorboard/, "
                                      "run.json, plots")
    num_generations: int = _f(4, "k answers per prompt; each is baselined by the mean of the other k - 1", range=">= 2")
    beta: float = _f(0.05, "KL coefficient beta in R = r - beta * log(pi / pi_ref), folded into the reward "
                           "[RLOO §3.2]", range=">= 0")
    loss_type: str = _f("sum", "REINFORCE sums the log-probs of an answer's tokens (sum); or average as GRPO "
                               "does", choices=list(LOSS_TYPES))
    scale_rewards: bool = _f(False, "unused by RLOO (its baseline is the leave-one-out mean, unscaled)")

    algorithm = "rloo"
