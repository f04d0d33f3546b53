"""Configuration of `align eval`: policies against a reference on held-out prompts."""

from __future__ import annotations

from dataclasses import dataclass, field

from prefloop.config import check_ranges
from prefloop.metrics import report_to_field


@dataclass
class EvalConfig:
    """Evaluate policies against a reference: win rates, reward, KL, length, best-of-N baseline, over-optimisation plot."""

    policies: list[str] = field(default_factory=list, metadata={
        "help": "policies π to evaluate: model dirs, checkpoints, or run dirs (each checkpoint-N, then final/)"})
    reference: str | None = field(default=None, metadata={
        "help": "reference policy π_ref (the model the policies started from; default: the embedded model)"})
    prompts: str | None = field(default=None, metadata={"help": "held-out prompt file (.jsonl/.csv/.parquet)"})
    store: str | None = field(default=None, metadata={"help": "or: a preference store URL to take prompts from"})
    project: str | None = field(default=None, metadata={"help": "project in the store"})
    max_prompts: int | None = field(default=None, metadata={"help": "evaluate on the first N prompts only",
                                                            "range": ">= 1", "aliases": ("limit",)})
    reward_model: str | None = field(default=None, metadata={
        "help": "reward model r_φ judging the win rate: a `reward-model train` dir or module:function"})
    gold: str | None = field(default=None, metadata={
        "help": "gold reward r* when one exists: a rule (prefloop.gold.RULES) or module:function"})
    num_generations: int = field(default=1, metadata={"help": "responses sampled per prompt and policy",
                                                      "range": ">= 1", "aliases": ("samples_per_prompt",)})
    max_new_tokens: int = field(default=64, metadata={"help": "response length cap in tokens", "range": ">= 1"})
    temperature: float = field(default=1.0, metadata={
        "help": "sampling temperature T; KL is measured between the policies at this temperature", "range": "> 0"})
    best_of: list[int] = field(default_factory=lambda: [1, 2, 4, 8], metadata={
        "help": "N for the best-of-N baseline from π_ref, picked by r_φ (KL = log N − (N−1)/N); "
                "skipped without --reward-model", "range": ">= 1"})
    batch_size: int = field(default=16, metadata={"help": "sequences per generation / scoring batch", "range": ">= 1"})
    confidence: float = field(default=0.95, metadata={"help": "coverage of the win-rate intervals (Wilson)",
                                                      "range": "(0, 1)"})
    seed: int = field(default=0, metadata={"help": "seed of the sampling (the same for every policy)", "range": "seed"})
    output_dir: str = field(default="runs/eval", metadata={"help": "eval.json and reward_vs_kl.png go here"})
    report_to: list[str] = report_to_field()

    def __post_init__(self):
        if not self.policies:
            raise ValueError("policies: name at least one policy")
        if self.prompts is None and not (self.store and self.project):
            raise ValueError("prompts: give a prompt file, or --store and --project")
        if self.reward_model is None and self.gold is None:
            raise ValueError("nothing to judge with: give --reward-model, --gold, or both")
        check_ranges(self)
